"""The YOLOv3-tiny Caffe ports' pooling (ChenYingpeng/caffe-yolov3's pooling_layer.cpp): max pooling with
kernel 2 and stride 1 keeps the map's size, where upstream Caffe's makes 13 into 12 and the net's Concat
fails. OpenCV sizes it as upstream does (no oracle), so the reference is checked against the port's
Reshape and Forward_cpu loops written out here, and every target against the reference."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.layer_targets import RUNNERS

import caffe2x
from caffe2x import fixtures
from caffe2x.errors import Caffe2xError, ForkRuleWarning
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute

#: yolov3-tiny's tail in miniature: 13 x 13 -> maxpool 2/1 -> 1x1 conv -> upsample x2 -> route with 26 x 26
NET = """name: "yolov3-tiny-mini"
input: "data" input_shape { dim: 2 dim: 3 dim: 52 dim: 52 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "layer12-maxpool" type: "Pooling" bottom: "pool2" top: "layer12-maxpool"
  pooling_param { stride: 1 pool: MAX kernel_size: 2 pad: 0 } }
layer { name: "conv3" type: "Convolution" bottom: "layer12-maxpool" top: "conv3"
  convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "up" type: "Upsample" bottom: "conv3" top: "up" upsample_param { scale: 2 } }
layer { name: "route" type: "Concat" bottom: "up" bottom: "conv2" top: "route" }
"""


def port_max_pool(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """PoolingLayer::Reshape and Forward_cpu (MAX) of the port: upstream's ceil size, +1 when
    kernel - stride is odd, upstream's last-window check with padding; windows clipped to the input."""
    n, c, height, width = x.shape
    size = [int(np.ceil((s + 2 * pad - kernel) / stride)) + 1 for s in (height, width)]
    if (kernel - stride) % 2 == 1:
        size = [s + 1 for s in size]
    if pad:
        size = [s - 1 if (s - 1) * stride >= d + pad else s for s, d in zip(size, (height, width))]
    out = np.full((n, c, *size), -np.finfo(np.float32).max, np.float32)
    for ph in range(size[0]):
        for pw in range(size[1]):
            h0, w0 = ph * stride - pad, pw * stride - pad
            h1, w1 = min(h0 + kernel, height), min(w0 + kernel, width)
            h0, w0 = max(h0, 0), max(w0, 0)
            if h1 > h0 and w1 > w0:
                out[:, :, ph, pw] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
    return out


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str = NET):  # type: ignore[no-untyped-def]
    deploy, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    deploy.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForkRuleWarning)
        model.write_bytes(fixtures.synthesize(text))
    with pytest.warns(ForkRuleWarning, match=r"ChenYingpeng/caffe-yolov3.*'layer12-maxpool'"):
        return caffe2x.load(model, deploy)


def test_size_preserving_pool_lets_the_route_concat_fit(tmp_path: Path) -> None:
    graph = load(tmp_path)
    assert graph.shapes[graph.blobs["layer12-maxpool"]] == (2, 6, 13, 13)
    assert graph.shapes[graph.blobs["route"]] == (2, 11, 26, 26)
    assert [n.op for n in graph.nodes if n.name.startswith("layer12")] == ["Pooling", "Crop"]
    # the stride-2 poolings are sized as upstream does (kernel - stride even)
    assert graph.node("pool2").op == "Pooling" and graph.shapes[graph.blobs["pool2"]] == (2, 6, 13, 13)


@pytest.mark.parametrize("ties", [False, True])
def test_reference_is_the_ports_pooling_loop(tmp_path: Path, ties: bool) -> None:
    graph = load(tmp_path)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 52, 52)).astype(np.float32)
    if ties:  # constant and negative regions: a clipped edge window must not see a 0 pad
        x = np.round(x).astype(np.float32) - 3.0
    values = execute(graph, {"data": x})
    np.testing.assert_array_equal(values[graph.blobs["layer12-maxpool"]], port_max_pool(values["pool2"], 2, 1, 0))


@pytest.mark.parametrize("framework", list(RUNNERS))
def test_every_target_runs_the_ports_pooling(tmp_path: Path, framework: str) -> None:
    graph = load(tmp_path)
    x = (np.random.default_rng(6).standard_normal((2, 3, 52, 52)) - 2).astype(np.float32)
    ref = execute(graph, {"data": x})
    got = RUNNERS[framework](graph, {"data": x}, ["route", "layer12-maxpool"], tmp_path)
    for name in ("route", "layer12-maxpool"):
        assert max_rel_error(got[name], ref[graph.blobs[name]]) <= 1e-6, (framework, name)


def test_a_net_upstream_caffe_reads_is_read_as_upstream(tmp_path: Path) -> None:
    text = NET.split('layer { name: "up"')[0]  # no route: 12 x 12 fits
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForkRuleWarning)
        graph = caffe2x.load(None, _write(tmp_path, text))
    assert graph.shapes[graph.blobs["layer12-maxpool"]] == (2, 6, 12, 12)
    assert graph.node("layer12-maxpool").op == "Pooling"


def test_a_net_that_fits_neither_rule_keeps_upstreams_error(tmp_path: Path) -> None:
    text = NET.replace("scale: 2", "scale: 3")  # 13 x 13 made 39 x 39 by the port's rule, 36 x 36 by upstream's
    with pytest.raises(Caffe2xError, match=r"'route' \(Concat\) inputs \[2, 5, 36, 36\] and \[2, 6, 26, 26\]"):
        caffe2x.load(None, _write(tmp_path, text))


def test_a_pooling_the_rule_changes_but_caffe2x_does_not_read_keeps_upstreams_error(tmp_path: Path) -> None:
    text = NET.replace("stride: 1 pool: MAX", "stride: 1 pool: AVE")
    with pytest.raises(Caffe2xError, match=r"'route' \(Concat\) inputs \[2, 5, 24, 24\] and \[2, 6, 26, 26\]"):
        caffe2x.load(None, _write(tmp_path, text))
