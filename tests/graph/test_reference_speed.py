"""The fast numpy reference computes Caffe's convolution exactly, and validate runs it once per batch."""
from __future__ import annotations

import numpy as np
import pytest

import caffe2x
from caffe2x import fixtures
from caffe2x.graph import reference
from caffe2x.graph.ir import Graph, Node


def direct_convolution(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: tuple[int, int],
                       pad: tuple[int, int], dilation: tuple[int, int], group: int) -> np.ndarray:
    """Caffe's convolution written out as its definition (float64 sums), for checking im2col + GEMM."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // group
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        gi = oc // og
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, gi * cg:(gi + 1) * cg,
                           i * dilation[0]:i * dilation[0] + stride[0] * (oh - 1) + 1:stride[0],
                           j * dilation[1]:j * dilation[1] + stride[1] * (ow - 1) + 1:stride[1]]
                y[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j].astype(np.float64))
        y[:, oc] += b[oc]
    return y


@pytest.mark.parametrize("kernel, stride, pad, dilation, group, band_bytes", [
    ((1, 1), (1, 1), (0, 0), (1, 1), 1, None),  # the input itself is the column matrix
    ((1, 1), (2, 2), (0, 0), (1, 1), 2, None),  # ResNet's strided projection, grouped
    ((3, 2), (2, 1), (1, 0), (2, 3), 2, None),
    ((3, 3), (1, 1), (4, 4), (4, 4), 1, 1),  # large dilation, in one-row bands
    ((5, 3), (2, 3), (2, 1), (1, 2), 3, 3000),  # bands of several rows, last band shorter
], ids=["1x1", "1x1-stride-group", "rect-dilated-group", "dilated-banded", "banded-rows"])
def test_convolution_is_caffes_definition(monkeypatch: pytest.MonkeyPatch, kernel, stride, pad, dilation, group,
                                          band_bytes) -> None:
    if band_bytes is not None:
        monkeypatch.setattr(reference, "IM2COL_BYTES", band_bytes)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
    w = rng.standard_normal((12, 6 // group, *kernel)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    node = Node("c", "Convolution", ["x"], ["y"], {"kernel": list(kernel), "stride": list(stride),
                                                   "pad": list(pad), "dilation": list(dilation), "group": group,
                                                   "num_output": 12}, {"weight": "c.weight", "bias": "c.bias"})
    graph = Graph("g", {"x": x.shape}, [node], {"c.weight": w, "c.bias": b})
    (y,) = reference.OPS["Convolution"](node, [x], graph)
    expected = direct_convolution(x, w, b, stride, pad, dilation, group)
    assert y.dtype == np.float32 and y.shape == expected.shape and y.flags.c_contiguous
    np.testing.assert_allclose(y, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_validate_runs_the_reference_once_per_batch(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, deploy = fixtures.write_model("tiny", tmp_path)
    calls = []
    real = reference._execute  # every caller's execute() ends here, however it imported execute

    def counting(graph, x, *rest):  # type: ignore[no-untyped-def]
        calls.append(x.shape)
        return real(graph, x, *rest)

    monkeypatch.setattr(reference, "_execute", counting)
    report = caffe2x.validate(model, deploy, frameworks=["numpy"])
    assert report.passed and len(calls) == 1
    (numpy_result,) = report.frameworks
    assert numpy_result.comparison.max_rel == 0.0


def test_reference_limits_blas_threads_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(reference, "BLAS_THREADS", 1)  # what CAFFE2X_BLAS_THREADS=1 sets
    seen = []
    relu = reference.OPS["ReLU"]

    def probe(node, ins, graph):  # type: ignore[no-untyped-def]
        seen.extend(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
        return relu(node, ins, graph)

    graph = fixtures.graph("conv_innerproduct")  # built (and calibrated) before the probe goes in
    monkeypatch.setitem(reference.OPS, "ReLU", probe)
    reference.run(graph, np.ones((2, 3, 8, 7), dtype=np.float32))
    assert seen and set(seen) == {1}
