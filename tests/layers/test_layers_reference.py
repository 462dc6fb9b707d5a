"""The numpy reference of every layer family (caffe2x/layers) against Caffe.

Where OpenCV's independent Caffe importer computes what Caffe computes, the reference must match it
layer by layer (<= 1e-5 relative). Where OpenCV lacks a layer or deviates (each case named in
layer_nets.NETS and in the README's OpenCV notes), the reference is checked against Caffe's formula,
written out here from Caffe's CPU code independently of caffe2x/layers.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute
from tests.helpers.layer_nets import NETS

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("this OpenCV has no Caffe importer (use opencv-python-headless 4.x)", allow_module_level=True)


def load(name: str, tmp_path: Path) -> tuple[caffe2x.Graph, Path, Path, dict[str, np.ndarray]]:
    net = NETS[name]
    deploy = tmp_path / f"{name}.prototxt"
    model = tmp_path / f"{name}.caffemodel"
    deploy.write_text(net.text)
    model.write_bytes(fixtures.synthesize(net.text))
    graph = caffe2x.load(model, deploy)
    return graph, model, deploy, net.inputs(dict(graph.inputs))


def blob_values(graph: caffe2x.Graph, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every Caffe blob's final value, by blob name."""
    return {blob: values[v] for blob, v in graph.blobs.items()}


@pytest.mark.parametrize("name", [n for n, net in NETS.items() if net.opencv])
def test_layer_matches_opencv(name: str, tmp_path: Path) -> None:
    graph, model, deploy, x = load(name, tmp_path)
    ours = execute(graph, x)
    cvnet = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for k, v in x.items():
        cvnet.setInput(v, k)
    layers = [n.name for n in graph.nodes]
    theirs = dict(zip(layers, cvnet.forwardAndRetrieve(layers)))  # every top of every layer
    for node in graph.nodes:
        assert len(theirs[node.name]) == len(node.outputs), node.name
        for out, other in zip(node.outputs, theirs[node.name]):
            value = ours[out]
            assert other.size == value.size, f"{name}: {out} has {other.shape} in OpenCV, {value.shape} here"
            assert max_rel_error(value, other.reshape(value.shape)) <= 1e-5, f"{name}: {out}"


# --------------------------------------------------------------------------- Caffe's formulas
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


Formula = Callable[[dict[str, np.ndarray], caffe2x.Graph, dict[str, np.ndarray]], dict[str, np.ndarray]]


def _log_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"].astype(np.float64)
    return {"log10": np.log(2 * d + 6) / np.log(10), "ln_shift": np.log(d + 5)}


def _threshold_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"]
    return {"th": (d > 0.2).astype(np.float32), "th0": (d > 0).astype(np.float32)}


def _bias_formula(x, g, v):  # type: ignore[no-untyped-def]
    b = lambda layer: g.tensors[f"{layer}.bias"]  # noqa: E731
    y1 = x["data"] + b("b")[None, :, None, None]          # default: axis 1, one axis
    y2 = y1 + b("b2")[None, :, :, None]                    # axes 1..2
    y3 = y2 + b("b3")[None, None, :, :]                    # axis -2 to the end
    return {"b": y1, "b2": y2, "b3": y3, "b0": y3 + b("b0")}  # num_axes 0: one scalar


def _axpy_formula(x, g, v):  # type: ignore[no-untyped-def]
    return {"axpy": v["sig"] * v["conv"] + x["data"]}


def _reduction_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"].astype(np.float64)
    return {"sum": d.sum(axis=(1, 2, 3)), "asum": 0.5 * np.abs(d).sum(axis=(2, 3)),
            "sumsq": (d * d).sum(axis=3), "mean": 2 * d.mean(axis=(1, 2, 3))}


def _argmax_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"]
    return {"am": np.argmax(d, axis=1)[:, None].astype(np.float32), "am_val": -np.sort(-d, axis=3)[..., :2]}


def _argmax_flat_formula(x, g, v):  # type: ignore[no-untyped-def]
    flat = x["data"].reshape(2, -1)
    idx = np.argsort(-flat, axis=1)[:, :3]
    idx2 = idx[:, :2]
    return {"top3": idx.reshape(2, 1, 3, 1).astype(np.float32),
            "top2_val": np.stack([idx2, np.take_along_axis(flat, idx2, 1)], axis=1).reshape(2, 2, 2, 1)}


def _caffe_top(v, k):  # type: ignore[no-untyped-def]
    """ArgMaxLayer's partial_sort of (value, index) pairs with std::greater: ties by the larger index."""
    order = sorted(range(len(v)), key=lambda i: (v[i], i), reverse=True)[:k]
    return np.array(order, dtype=np.float32), np.array([v[i] for i in order], dtype=np.float32)


def _argmax_ties_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"]
    am = np.zeros((2, 2, 4, 5), np.float32)
    for n, h, w in np.ndindex(2, 4, 5):
        am[n, :, h, w] = _caffe_top(d[n, :, h, w], 2)[0]
    flat = [_caffe_top(d[n].ravel(), 4) for n in range(2)]
    return {"am_ties": am, "flat_ties": np.stack([np.stack(f) for f in flat]).reshape(2, 2, 4, 1)}


def _batch_axis_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"]
    am = np.zeros((2, *d.shape[1:]), np.float32)
    for c, h, w in np.ndindex(*d.shape[1:]):
        am[:, c, h, w] = _caffe_top(d[:, c, h, w], 2)[0]
    return {"am0": am, "red0": np.array(0.5 * (d.astype(np.float64) ** 2).sum())}


def _caffe_pool(d, method, k, pad):  # type: ignore[no-untyped-def]
    """PoolingLayer::Forward_cpu with stride = kernel (as SPP sets it): ceil output size, a last window
    starting in the padding dropped; AVE divides by the window clipped to the padded map."""
    n, c, h, w = d.shape
    out_hw = []
    for size, kk, pp in zip((h, w), k, pad):
        o = -(-(size + 2 * pp - kk) // kk) + 1
        if (o - 1) * kk >= size + pp:
            o -= 1
        out_hw.append(o)
    y = np.zeros((n, c, *out_hw))
    for i, j in np.ndindex(*out_hw):
        hs, ws = i * k[0] - pad[0], j * k[1] - pad[1]
        he, we = min(hs + k[0], h + pad[0]), min(ws + k[1], w + pad[1])
        area = (he - hs) * (we - ws)
        window = d[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
        y[:, :, i, j] = window.max(axis=(2, 3)) if method == "max" else window.sum(axis=(2, 3)) / area
    return y


def _spp_formula(x, g, v):  # type: ignore[no-untyped-def]
    """spp_layer.cpp: level l has 2^l bins per axis, kernel = stride = ceil(size / bins), pad =
    (kernel * bins - size + 1) / 2; levels flattened and concatenated (one level: the pooling itself)."""
    d = x["data"].astype(np.float64)

    def level(method, l):  # type: ignore[no-untyped-def]
        bins = 2 ** l
        k = [-(-s // bins) for s in d.shape[2:]]
        pad = [(kk * bins - s + 1) // 2 for kk, s in zip(k, d.shape[2:])]
        return _caffe_pool(d, method, k, pad)

    pyramid = lambda method, height: np.concatenate(  # noqa: E731
        [level(method, l).reshape(len(d), -1) for l in range(height)], axis=1)
    return {"spp": pyramid("max", 3), "spp_ave": pyramid("ave", 2), "spp1": level("max", 0)}


def _batch_stats_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"].astype(np.float64)
    mean = d.mean(axis=(0, 2, 3), keepdims=True)
    return {"bn": (d - mean) / np.sqrt(d.var(axis=(0, 2, 3), keepdims=True) + 0.001)}


def _depthwise_formula(x, g, v):  # type: ignore[no-untyped-def]
    """Channel c of a depthwise convolution sees only input channel c // multiplier."""
    def depthwise(d, w, b, stride, pad):  # type: ignore[no-untyped-def]
        n, c, h, wd = d.shape
        o, _, k, _ = w.shape
        d = np.pad(d, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
        y = np.zeros((n, o, oh, ow))
        for oc in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = d[:, oc // (o // c), i * stride:i * stride + k, j * stride:j * stride + k]
                    y[:, oc, i, j] = (patch * w[oc, 0]).sum(axis=(1, 2))
        return y + (0 if b is None else b[None, :, None, None])
    dw = depthwise(x["data"], g.tensors["dw.weight"], g.tensors["dw.bias"], 2, 1)
    if "dw2" not in g.blobs:  # DepthwiseConvolution (yonghenglh6's name for the same layer): one layer
        return {"dw": dw}
    return {"dw": dw, "dw2": depthwise(dw, g.tensors["dw2.weight"], None, 1, 0)}


def _embed_formula(x, g, v):  # type: ignore[no-untyped-def]
    th = (x["data"] > 0).astype(int)
    am = np.argmax(x["data"], axis=1)
    return {"emb": g.tensors["emb.weight"][th] + g.tensors["emb.bias"], "emb2": g.tensors["emb2.weight"][am[:, None]]}


def _mvn_eps_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"].astype(np.float64)
    centred = d - d.mean(axis=(1, 2, 3), keepdims=True)
    return {"mvn_eps": centred / (centred.std(axis=(1, 2, 3), keepdims=True) + 0.01)}


def _bn_segnet_formula(x, g, v):  # type: ignore[no-untyped-def]
    d = x["data"].astype(np.float64)
    w, b = g.tensors["bn_learn.weight"], g.tensors["bn_learn.bias"]
    mean, var = d.mean(axis=(0, 2, 3), keepdims=True), d.var(axis=(0, 2, 3), keepdims=True)
    return {"bn_inf": d * g.tensors["bn_inf.weight"] + g.tensors["bn_inf.bias"],
            "bn_learn": (d - mean) / np.sqrt(var + 1e-9) * w + b}


def _bn_pspnet_formula(x, g, v):  # type: ignore[no-untyped-def]
    t = {role: g.tensors[f"bn_psp.{role}"].astype(np.float64) for role in ("weight", "bias", "running_mean", "running_var")}
    return {"bn_psp": (x["data"] - t["running_mean"]) / np.sqrt(t["running_var"] + 0.001) * t["weight"] + t["bias"]}


FORMULAS: dict[str, Formula] = {
    # the axes the order leaves out follow in increasing order: (0, 3) is (0, 3, 1, 2)
    "permute_partial_order": lambda x, g, v: {"p2": x["data"].transpose(0, 3, 1, 2)},
    "bn_fork_segnet": _bn_segnet_formula,
    "bn_fork_pspnet": _bn_pspnet_formula,
    "mvn_eps": _mvn_eps_formula,
    "batchnorm_batch_statistics": _batch_stats_formula,
    "depthwise": _depthwise_formula,
    "depthwise_convolution": _depthwise_formula,
    "embed": _embed_formula,
    # axis -3 of a 4-D blob starts at axis 2 (Caffe counts a negative axis from past the end)
    "reshape_negative_axis": lambda x, g, v: {"r3": x["data"].reshape(2, 3, 20), "r4": x["data"].reshape(2, 3, 20, 1, 1)},
    "tile": lambda x, g, v: {"t1": np.concatenate([x["data"]] * 2, axis=1), "t2": np.concatenate([x["data"]] * 3, axis=3)},
    "slice_equal_and_slice_dim": lambda x, g, v: {"d": x["data"][:, :, :2], "e": x["data"][:, :, 2:],
                                                  "f": x["data"][..., :2], "g": x["data"][..., 2:]},
    "reduction": _reduction_formula,
    "reduction_all": lambda x, g, v: {"total": np.array(x["data"].astype(np.float64).mean())},
    "argmax": _argmax_formula,
    "argmax_flat": _argmax_flat_formula,
    "argmax_ties": _argmax_ties_formula,
    "spp": _spp_formula,
    "batch_axis_argmax_reduction": _batch_axis_formula,
    "log_base_scale_shift": _log_formula,
    "threshold": _threshold_formula,
    "clip": lambda x, g, v: {"clip": np.clip(x["data"], -0.5, 0.7)},
    "swish_beta": lambda x, g, v: {"swish_b": x["data"] * _sigmoid(1.7 * x["data"].astype(np.float64))},
    "bias_learned": _bias_formula,
    "bias_two_inputs": lambda x, g, v: {"bb": x["data"] + x["b"][None, :, :, None]},
    "scale_two_inputs_bias": lambda x, g, v: {
        "sb": x["data"] * x["s"][None, :, :, None] + g.tensors["sb.bias"][None, :, :, None]},
    "axpy": _axpy_formula,
}


def test_every_net_opencv_cannot_check_has_a_formula() -> None:
    assert {n for n, net in NETS.items() if not net.opencv} == set(FORMULAS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_layer_matches_caffes_formula(name: str, tmp_path: Path) -> None:
    graph, _, _, x = load(name, tmp_path)
    values = blob_values(graph, execute(graph, x))
    for blob, expected in FORMULAS[name](x, graph, values).items():
        assert values[blob].shape == expected.shape, f"{name}: {blob}"
        assert max_rel_error(values[blob], expected) <= 1e-5, f"{name}: {blob}"


def test_power_with_zero_power_times_scale_ignores_the_input() -> None:
    """Caffe writes 1 (power 0) or shift ** power (scale 0), even where the input is inf or nan."""
    graph = caffe2x.caffe.reader.graph_from_text(NETS["power_constant"].text)
    x = np.full((2, 3, 4, 5), np.nan, dtype=np.float32)
    values = execute(graph, x)
    assert np.all(values["one"] == 1) and np.all(values["const"] == 8)


def test_silenced_blobs_are_not_net_outputs() -> None:
    text = NETS["power"].text + 'layer { name: "quiet" type: "Silence" bottom: "lin" }\n'
    graph = caffe2x.caffe.reader.graph_from_text(text)
    assert [graph.blob_name(v) for v in graph.outputs] == ["sq"]
    assert [n.name for n in graph.nodes] == ["sq", "lin"]


def test_reshape_and_crop_follow_a_batch_size_other_than_the_nets() -> None:
    """The validator and users run nets at other batch sizes, as a reshaped Caffe net does."""
    graph = caffe2x.caffe.reader.graph_from_text(NETS["reshape"].text)  # declared batch 2
    x = np.random.default_rng(5).standard_normal((3, 3, 4, 5)).astype(np.float32)
    values = execute(graph, x)
    np.testing.assert_array_equal(values["r2"], x.reshape(3, 2, 3, 10))
    graph = caffe2x.caffe.reader.graph_from_text(NETS["crop"].text)
    feeds = {"data": np.random.default_rng(6).standard_normal((3, 3, 9, 11)).astype(np.float32),
             "ref": np.zeros((1, 1, 5, 6), np.float32), "ref2": np.zeros((1, 2, 4, 4), np.float32)}
    values = execute(graph, feeds)
    np.testing.assert_array_equal(values["c1"], feeds["data"][:, :, 2:7, 2:8])
    np.testing.assert_array_equal(values["c3"], feeds["data"][:, 1:3, 0:4, 2:6])
