"""validate runs photos one at a time only through nets that treat the samples of a batch independently
(:func:`caffe2x.graph.ir.samples_independent`); others run the batch whole, and the report has a row per row
of the logits when those are not one per image (SSD's DetectionOutput)."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers.layer_nets import NETS, _layer, _net

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.ir import samples_independent
from caffe2x.validation.framework_run import batches_for


def graph_of(text: str, tmp_path: Path) -> caffe2x.Graph:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffe2x.load(None, path)


@pytest.mark.parametrize(("net", "independent"), [
    ("reduction", True),                     # over axis 1: per sample
    ("permute", True),                       # order starts with 0
    ("mvn", True),                           # per-sample statistics
    ("batchnorm_batch_statistics", False),   # statistics over the batch
    ("batch_axis_argmax_reduction", False),  # ArgMax over axis 0
    ("tile", True),
])
def test_sample_independence_follows_what_each_layer_does_with_axis_0(net: str, independent: bool,
                                                                      tmp_path: Path) -> None:
    assert samples_independent(graph_of(NETS[net].text, tmp_path), 4) is independent


def test_a_softmax_over_the_batch_and_a_batch_merging_reshape_are_not_split(tmp_path: Path) -> None:
    softmax = _net((2, 3, 4, 5), _layer("sm", "Softmax", "data", "softmax_param { axis: 0 }"))
    reshape = _net((2, 3, 4, 5), _layer("r", "Reshape", "data", "reshape_param { shape { dim: -1 dim: 5 } }"))
    plain = _net((2, 3, 4, 5), _layer("sm", "Softmax", "data"))
    assert not samples_independent(graph_of(softmax, tmp_path), 4)
    assert not samples_independent(graph_of(reshape, tmp_path), 4)
    assert samples_independent(graph_of(plain, tmp_path), 4)


def test_ssd_photos_run_as_one_batch_and_resnet_style_photos_one_at_a_time(tmp_path: Path) -> None:
    ssd = caffe2x.load(*fixtures.write_model("ssd_mobilenet_style", tmp_path / "ssd"))
    tiny = caffe2x.load(*fixtures.write_model("tiny", tmp_path / "tiny"))
    assert batches_for(4, True, ssd) == [(0, 4)]  # DetectionOutput gathers every image's detections
    assert batches_for(4, True, tiny) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert batches_for(4, False, tiny) == [(0, 4)]  # arrays run as given


def test_ssd_validates_on_photos_and_its_report_has_a_row_per_logits_row(tmp_path: Path) -> None:
    from caffe2x.validation.report import render_html

    model, deploy = fixtures.write_model("ssd_mobilenet_style", tmp_path)
    report = caffe2x.validate(model, deploy, frameworks=["numpy", "onnx"])
    assert report.passed, report.table()
    table = report.table()
    assert "top-5 per row of the logits (reference)" in table and "  row 0  " in table
    assert "row 0" in render_html(report.to_dict())
