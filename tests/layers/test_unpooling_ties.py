"""ENet/SegNet unpooling (Upsample with a MAX pooling's mask) where the pooling windows hold ties
(values in {0, 1, 2}): every target records the first maximum of a window in row-major order, as the
forks' strict ``>`` scan does, also with overlapping windows (two outputs sending to one index). Also a plane large enough that (index, position) keys pass int32 (ENet's 512 x 1024
input unpools 128 x 256 maps into 256 x 512: Keras raised InvalidArgumentError there)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe2x.caffe.reader import graph_from_text
from caffe2x.graph.numeric import max_rel_error
from caffe2x.graph.reference import execute
from tests.helpers.layer_targets import RUNNERS


def unpool_net(shape: tuple[int, ...], kernel: int, stride: int, upsample: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""input: "data" input_shape {{ {dims} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "pool_mask"
  pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }} }}
layer {{ name: "scale" type: "Power" bottom: "pool" top: "scaled" power_param {{ scale: 3 shift: 1 }} }}
layer {{ name: "up" type: "Upsample" bottom: "scaled" bottom: "pool_mask" top: "up" upsample_param {{ {upsample} }} }}
"""


def ties(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([0, 1, 2], np.float32), shape)


CASES = {
    "2x2_stride_2": ((2, 3, 10, 14), 2, 2, "scale: 2"),
    "3x3_stride_2_overlapping": ((2, 3, 11, 13), 3, 2, "upsample_h: 11 upsample_w: 13"),
}


@pytest.mark.parametrize("framework", list(RUNNERS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_target_unpools_ties_at_the_first_maximum(framework: str, case: str, tmp_path: Path) -> None:
    shape, kernel, stride, upsample = CASES[case]
    graph = graph_from_text(unpool_net(shape, kernel, stride, upsample))
    x = {"data": ties(shape)}
    ref = execute(graph, x)
    mask = ref[graph.value("pool_mask")]
    flat = x["data"].reshape(*shape[:2], -1)
    window_max = ref[graph.value("pool")]
    assert np.array_equal(np.take_along_axis(flat, mask.reshape(*shape[:2], -1).astype(int), 2).reshape(mask.shape),
                          window_max)  # the mask points at a maximum
    got = RUNNERS[framework](graph, x, ["pool_mask", "up"], tmp_path)
    np.testing.assert_array_equal(got["pool_mask"], mask)
    np.testing.assert_array_equal(got["up"], ref[graph.value("up")])


def test_the_reference_takes_the_first_maximum_by_hand() -> None:
    """Rows [2, 2, 1, 2] and [1, 2, 1, 0] pooled by 1 x 2 windows with stride 1: the masks are each
    window's first maximum (0, 1, 3 and 5, 5, 6); both windows of the second row that hold the 2 send
    it to index 5; index 2, 4 and 7 stay 0."""
    text = unpool_net((1, 1, 2, 4), 1, 1, "upsample_h: 2 upsample_w: 4").replace(
        "kernel_size: 1 stride: 1", "kernel_h: 1 kernel_w: 2 stride: 1")
    graph = graph_from_text(text)
    x = {"data": np.array([[[[2, 2, 1, 2], [1, 2, 1, 0]]]], np.float32)}
    values = execute(graph, x)
    np.testing.assert_array_equal(values[graph.value("pool_mask")], [[[[0, 1, 3], [5, 5, 6]]]])
    np.testing.assert_array_equal(values[graph.value("up")], [[[[7, 7, 0, 7], [0, 7, 4, 0]]]])


@pytest.mark.parametrize("framework", ["keras", "torch", "onnx"])
def test_an_unpooling_plane_past_int32_keys(framework: str, tmp_path: Path) -> None:
    shape = (1, 2, 256, 384)  # 128 x 192 values into 256 x 384: 24576 x 98304 keys > 2^31
    graph = graph_from_text(unpool_net(shape, 2, 2, "scale: 2"))
    x = {"data": np.random.default_rng(3).standard_normal(shape).astype(np.float32)}
    ref = execute(graph, x)[graph.value("up")]
    got = RUNNERS[framework](graph, x, ["up"], tmp_path)["up"]
    assert got.shape == ref.shape and max_rel_error(got, ref) <= 1e-5
