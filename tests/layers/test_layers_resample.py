"""MAX Pooling with a mask top, Upsample (unpooling and nearest) and Interp: the numpy reference against
OpenCV where OpenCV implements the layer as Caffe does, else against Caffe's loops by hand."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.opencv_caffe import opencv_forward

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import pool_output_size
from caffe2x.graph.numeric import max_rel_error
from caffe2x.layers.resample import interp, max_pool_with_mask, unpool

TOL = 1e-5


def caffe_max_pool_loop(x: np.ndarray, k: int, s: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's PoolingLayer::Forward_cpu MAX loop, transcribed: windows clipped to the input, strict '>'
    scan in row-major order starting from -FLT_MAX, mask = h * W + w."""
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, k, s, p), pool_output_size(w, k, s, p)
    y = np.full((n, c, oh, ow), -np.finfo(np.float32).max, np.float32)
    mask = np.full((n, c, oh, ow), -1.0, np.float32)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h), min(ws + k, w)
            hs, ws = max(hs, 0), max(ws, 0)
            for b in range(n):
                for ch in range(c):
                    for hh in range(hs, he):
                        for ww in range(ws, we):
                            if x[b, ch, hh, ww] > y[b, ch, i, j]:
                                y[b, ch, i, j] = x[b, ch, hh, ww]
                                mask[b, ch, i, j] = hh * w + ww
    return y, mask


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 2, 0), (3, 3, 1)])
def test_max_pool_mask_is_caffes_first_maximum_flat_index(k: int, s: int, p: int) -> None:
    """OpenCV's importer does not expose the mask top, so Caffe's loop is the yardstick (with ties)."""
    rng = np.random.default_rng(k * 10 + s + p)
    x = rng.integers(-3, 3, (2, 2, 9, 8)).astype(np.float32)  # many ties
    oh, ow = pool_output_size(9, k, s, p), pool_output_size(8, k, s, p)
    y, mask = max_pool_with_mask(x, [k, k], [s, s], [p, p], (oh, ow))
    ey, emask = caffe_max_pool_loop(x, k, s, p)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(mask, emask)


def test_max_pool_values_match_opencv(tmp_path: Path) -> None:
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 8)).astype(np.float32)
    text = """input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 8 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }"""
    (theirs,) = opencv_forward(tmp_path, text, {"data": x}, ["pool"])
    y, _ = max_pool_with_mask(x, [3, 3], [2, 2], [1, 1], (pool_output_size(9, 3, 2, 1), pool_output_size(8, 3, 2, 1)))
    assert max_rel_error(y, theirs) <= TOL


def test_unpooling_puts_each_value_at_its_mask_index_and_a_later_write_wins() -> None:
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    mask = np.array([[[[0.0, 5.0], [5.0, 8.0]]]], np.float32)  # index 5 twice: the later value (3) stays
    np.testing.assert_array_equal(unpool(x, mask, [3, 3]),
                                  [[[[1, 0, 0], [0, 0, 3], [0, 0, 4]]]])


def test_unpooling_inverts_max_pooling_positions() -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6)).astype(np.float32)
    y, mask = max_pool_with_mask(x, [2, 2], [2, 2], [0, 0], (3, 3))
    up = unpool(y, mask, [6, 6])
    assert np.count_nonzero(up) == y.size
    np.testing.assert_array_equal(up[up != 0], x[up != 0])


def test_unpooling_index_outside_the_output_is_an_error() -> None:
    with pytest.raises(Caffe2xError, match="outside"):
        unpool(np.ones((1, 1, 1, 1), np.float32), np.array([[[[9.0]]]], np.float32), [3, 3], "up")


# --------------------------------------------------------------------------- Interp
def test_interp_by_height_width_matches_opencv(tmp_path: Path) -> None:
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 8)).astype(np.float32)
    text = """input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 8 }
layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { height: 13 width: 5 } }"""
    (theirs,) = opencv_forward(tmp_path, text, {"data": x}, ["i"])
    assert max_rel_error(interp(x, [13, 5], [0, 0], [9, 8]), theirs) <= TOL


def test_interp_is_align_corners_bilinear_by_hand() -> None:
    """2x3 -> 3x5 (zoom 2): corners kept, midpoints averaged (Caffe's r = (in - 1) / (out - 1))."""
    x = np.array([[[[0.0, 2.0, 4.0], [10.0, 12.0, 14.0]]]], np.float32)
    np.testing.assert_allclose(interp(x, [3, 5], [0, 0], [2, 3]),
                               [[[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]]], rtol=1e-6)


def test_interp_negative_pads_crop_before_interpolating() -> None:
    """pad_beg = pad_end = -1 interpolates the input without its border (OpenCV ignores the pads)."""
    x = np.random.default_rng(7).standard_normal((1, 2, 6, 7)).astype(np.float32)
    cropped = x[:, :, 1:5, 1:6]
    np.testing.assert_array_equal(interp(x, [7, 9], [1, 1], [4, 5]), interp(cropped, [7, 9], [0, 0], [4, 5]))
