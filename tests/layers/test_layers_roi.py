"""ROIPooling (Faster R-CNN) and PSROIPooling (R-FCN): the numpy reference against OpenCV's importer,
and the forks' rounding by hand."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.helpers.opencv_caffe import opencv_forward

from caffe2x.errors import Caffe2xError
from caffe2x.graph.numeric import max_rel_error
from caffe2x.layers.roi import c_round, psroi_pooling, roi_pooling

TOL = 1e-5

#: regions in image pixels: ordinary, whole image, tiny, partly outside, beyond the map
ROIS = np.array([[0, 3, 5, 40, 30], [1, 0, 0, 79, 95], [0, 17.5, 22.5, 18.2, 23], [1, -10, 4, 30, 200],
                 [0, 50, 50, 60, 70], [1, 100, 120, 130, 140]], np.float32)


def features(seed: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 8, 12, 10)).astype(np.float32)


def roi_net(layer: str) -> str:
    return f"""input: "data" input_shape {{ dim: 2 dim: 8 dim: 12 dim: 10 }}
input: "rois" input_shape {{ dim: {len(ROIS)} dim: 5 }}
{layer}"""


def test_roi_pooling_matches_opencv(tmp_path: Path) -> None:
    text = roi_net('layer { name: "r" type: "ROIPooling" bottom: "data" bottom: "rois" top: "r" '
                   'roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.125 } }')
    (theirs,) = opencv_forward(tmp_path, text, {"data": features(), "rois": ROIS}, ["r"])
    assert max_rel_error(roi_pooling(features(), ROIS, [3, 4], 0.125), theirs) <= TOL


def test_psroi_pooling_matches_opencv(tmp_path: Path) -> None:
    text = roi_net('layer { name: "r" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "r" '
                   'psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 0.125 } }')
    (theirs,) = opencv_forward(tmp_path, text, {"data": features(), "rois": ROIS}, ["r"])
    assert max_rel_error(psroi_pooling(features(), ROIS, 2, 2, 0.125), theirs) <= TOL


def test_roi_corners_round_half_away_from_zero() -> None:
    """C's round, not numpy's round-half-to-even: 2.5 -> 3, -2.5 -> -3, 0.49999997 -> 0."""
    np.testing.assert_array_equal(c_round(np.array([2.5, -2.5, 3.5, 0.49999997, 1.4999999], np.float32)),
                                  [3, -3, 4, 0, 1])


def test_roi_pooling_bins_by_hand() -> None:
    """A 4x4 map, region (0.5, 0.5)-(2.5, 2.5) at scale 1 rounds to rows/columns 1..3 (3 cells): 2x2 bins
    of 1.5 cells cover [1, 3) and [1.5 -> 1, 3) ... i.e. floor/ceil of k * 1.5 shifted by 1."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = roi_pooling(x, np.array([[0, 0.5, 0.5, 2.5, 2.5]], np.float32), [2, 2], 1.0)
    # bins: rows [1, 3) and [2, 4), columns likewise; max of each
    np.testing.assert_array_equal(out, [[[[x[0, 0, 1:3, 1:3].max(), x[0, 0, 1:3, 2:4].max()],
                                          [x[0, 0, 2:4, 1:3].max(), x[0, 0, 2:4, 2:4].max()]]]])


def test_region_naming_a_missing_image_is_an_error() -> None:
    with pytest.raises(Caffe2xError, match="image 2"):
        roi_pooling(features(), np.array([[2, 0, 0, 5, 5]], np.float32), [2, 2], 1.0, "r")
