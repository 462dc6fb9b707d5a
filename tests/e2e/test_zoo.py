"""The classic zoo nets caffe2x synthesises: published structure, every target, validated.

Parameter counts are checked on every net (cheap: seeded tensors, no calibration); the full
convert-to-every-framework validation runs on the small nets by default and on the big ones
(CaffeNet 61 M, GoogLeNet 7 M parameters) behind ``-m slow``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.caffe import reader
from caffe2x.caffe.proto import caffe_pb2
from caffe2x.caffe.parse import parse_prototxt_text
from caffe2x.caffe.reader import build_graph
from caffe2x.cli.inspect import learned_parameter_count
from caffe2x.fixtures import zoo


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_inspect_reports_the_published_parameter_count(name: str) -> None:
    graph = build_graph(parse_prototxt_text(zoo.MODELS[name].prototxt()), None, seed=0)
    assert learned_parameter_count(graph) == zoo.MODELS[name].weights
    assert graph.shapes[graph.outputs[0]][:2] == (1, 1000)


def _validate(name: str, directory: Path) -> None:
    model, deploy = fixtures.write_model(name, directory)
    photo = Path(caffe2x.__file__).parent / "data" / "images" / "chelsea_cat.jpg"  # one photo keeps it quick
    report = caffe2x.validate(str(model), str(deploy), frameworks=["numpy", "torch", "keras", "onnx"], images=[photo])
    assert report.passed, report.table()
    assert {f.name for f in report.frameworks} >= {"torch", "keras", "onnx"}


@pytest.mark.parametrize("name", ["squeezenet", "mobilenet", "fcn_style", "crnn_style"])
def test_small_zoo_nets_convert_to_every_framework_and_validate(name: str, tmp_path: Path) -> None:
    _validate(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "caffenet"])
def test_big_zoo_nets_convert_to_every_framework_and_validate(name: str, tmp_path: Path) -> None:
    _validate(name, tmp_path)


def test_caffenet_is_stored_as_bvlc_published_it_v1_with_legacy_dims() -> None:
    small = zoo.caffenet_prototxt().replace("num_output: 4096", "num_output: 16")
    data = zoo.to_v1_caffemodel(fixtures.synthesize(small))
    net = caffe_pb2.NetParameter.FromString(data)
    assert not net.layer and [l.name for l in net.layers][:3] == ["conv1", "relu1", "pool1"]
    fc6 = next(l for l in net.layers if l.name == "fc6")
    assert (fc6.blobs[0].num, fc6.blobs[0].channels, fc6.blobs[0].height, fc6.blobs[0].width) == (1, 1, 16, 9216)
    assert not fc6.blobs[0].shape.dim
    current = reader.read_bytes(fixtures.synthesize(small), small)
    legacy = reader.read_bytes(data, small)
    assert legacy.equals(current)
