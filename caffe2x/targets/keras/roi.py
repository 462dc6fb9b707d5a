"""ROIPooling and PSROIPooling as registered Keras layers written with ``keras.ops`` (formulas:
:mod:`caffe2x.layers.roi`).

The bins are computed for every region at once with the forks' float32 arithmetic and C rounding (in
float64, as the reference). The pooling then runs region by region (``ops.map``), so memory stays at
one feature map per region in flight rather than regions x bins x H x W x C: each region takes its
image, masks the rows of each bin and the columns of each bin, and reduces -- MAX separably (rows,
then columns; an empty bin is 0), the position-sensitive average over the bin's channel group (the
sum over the masked window divided by the bin's area). Features and output are NHWC."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder


def _c_round(v: Any) -> Any:
    """C's ``round`` (half away from zero) of float32 values, as int32 (in float64, as the reference)."""
    d = ops.cast(v, "float64")
    return ops.cast(ops.sign(d) * ops.floor(ops.abs(d) + 0.5), "int32")


def _masks(lo: Any, hi: Any, size: int) -> Any:
    """(R, bins, size): position p lies in bin [lo, hi)."""
    p = ops.reshape(ops.arange(size, dtype="int32"), (1, 1, size))
    return ops.logical_and(ops.greater_equal(p, ops.expand_dims(lo, 2)), ops.less(p, ops.expand_dims(hi, 2)))


def _per_region(fn: Any, count: Any) -> Any:
    return ops.map(fn, ops.arange(count, dtype="int32"))


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeROIPooling(keras.layers.Layer):
    """Fast R-CNN's ROIPooling over ``[features (N, H, W, C), rois (R, 5)]`` -> (R, ph, pw, C)."""

    def __init__(self, pooled: tuple[int, int] | list[int], spatial_scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pooled = (int(pooled[0]), int(pooled[1]))
        self.spatial_scale = float(spatial_scale)

    def call(self, x: Any, rois: Any) -> Any:
        height, width = int(x.shape[1]), int(x.shape[2])
        rois = ops.reshape(ops.cast(rois, "float32"), (-1, 5))
        batch = ops.cast(rois[:, 0], "int32")
        corners = _c_round(rois[:, 1:] * np.float32(self.spatial_scale))  # x1, y1, x2, y2 on the map

        def axis(start: Any, end: Any, bins: int, size: int) -> tuple[Any, Any]:
            extent = ops.maximum(end - start + 1, 1)
            bin_size = ops.expand_dims(ops.cast(extent, "float32") / np.float32(bins), 1)
            k = ops.reshape(ops.arange(bins, dtype="float32"), (1, bins))
            lo = ops.cast(ops.floor(k * bin_size), "int32") + ops.expand_dims(start, 1)
            hi = ops.cast(ops.ceil((k + 1.0) * bin_size), "int32") + ops.expand_dims(start, 1)
            return ops.clip(lo, 0, size), ops.clip(hi, 0, size)

        rows = _masks(*axis(corners[:, 1], corners[:, 3], self.pooled[0], height), height)  # (R, ph, H)
        cols = _masks(*axis(corners[:, 0], corners[:, 2], self.pooled[1], width), width)    # (R, pw, W)
        low = np.float32(-np.inf)

        def region(r: Any) -> Any:
            img = ops.take(x, ops.take(batch, r), axis=0)                                 # (H, W, C)
            mh, mw = ops.take(rows, r, axis=0), ops.take(cols, r, axis=0)
            by_rows = ops.max(ops.where(mh[:, :, None, None], img[None], low), axis=1)    # (ph, W, C)
            pooled = ops.max(ops.where(mw[None, :, :, None], by_rows[:, None], low), axis=2)  # (ph, pw, C)
            full = ops.logical_and(ops.any(mh, axis=1)[:, None], ops.any(mw, axis=1)[None, :])
            return ops.where(full[:, :, None], pooled, ops.zeros_like(pooled))

        return _per_region(region, ops.shape(rois)[0])

    def compute_output_shape(self, x_shape: Any, rois_shape: Any = None) -> Any:
        rois = rois_shape[0] if rois_shape is not None else None
        return (rois, *self.pooled, x_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pooled": list(self.pooled), "spatial_scale": self.spatial_scale}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffePSROIPooling(keras.layers.Layer):
    """R-FCN's PSROIPooling over ``[features (N, H, W, output_dim * g * g), rois (R, 5)]`` -> (R, g, g,
    output_dim): output channel k at bin (i, j) averages input channel (k * g + i) * g + j."""

    def __init__(self, output_dim: int, group_size: int, spatial_scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_dim, self.group_size = int(output_dim), int(group_size)
        self.spatial_scale = float(spatial_scale)

    def call(self, x: Any, rois: Any) -> Any:
        height, width, g = int(x.shape[1]), int(x.shape[2]), self.group_size
        rois = ops.reshape(ops.cast(rois, "float32"), (-1, 5))
        batch = ops.cast(rois[:, 0], "int32")
        scale = np.float32(self.spatial_scale)
        rounded = ops.cast(_c_round(rois[:, 1:]), "float32")
        start = rounded[:, :2] * scale                                       # x1, y1
        end = (rounded[:, 2:] + 1.0) * scale                                 # x2 + 1, y2 + 1
        bin_size = ops.maximum(end - start, np.float32(0.1)) / np.float32(g)
        k = ops.reshape(ops.arange(g, dtype="float32"), (1, g))

        def axis(i: int, size: int) -> tuple[Any, Any]:
            lo = ops.cast(ops.floor(k * bin_size[:, i:i + 1] + start[:, i:i + 1]), "int32")
            hi = ops.cast(ops.ceil((k + 1.0) * bin_size[:, i:i + 1] + start[:, i:i + 1]), "int32")
            return ops.clip(lo, 0, size), ops.clip(hi, 0, size)

        (hs, he), (ws, we) = axis(1, height), axis(0, width)
        rows, cols = _masks(hs, he, height), _masks(ws, we, width)           # (R, g, H), (R, g, W)
        area = ops.cast(ops.expand_dims(he - hs, 2) * ops.expand_dims(we - ws, 1), "float32")  # (R, g, g)
        grouped = ops.reshape(x, (-1, height, width, self.output_dim, g, g))

        def region(r: Any) -> Any:
            img = ops.take(grouped, ops.take(batch, r), axis=0)                           # (H, W, K, g, g)
            mh, mw = ops.take(rows, r, axis=0), ops.take(cols, r, axis=0)
            inside = ops.logical_and(ops.transpose(mh)[:, None, None, :, None],
                                     ops.transpose(mw)[None, :, None, None, :])          # (H, W, 1, g, g)
            total = ops.sum(ops.where(inside, img, ops.zeros_like(img)), axis=(0, 1))  # (K, g, g)
            a = ops.take(area, r, axis=0)
            mean = ops.where(a > 0, total / ops.maximum(a, 1.0), ops.zeros_like(total))
            return ops.transpose(mean, (1, 2, 0))                                       # (g, g, K)

        return _per_region(region, ops.shape(rois)[0])

    def compute_output_shape(self, x_shape: Any, rois_shape: Any = None) -> Any:
        rois = rois_shape[0] if rois_shape is not None else None
        return (rois, self.group_size, self.group_size, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_dim": self.output_dim, "group_size": self.group_size,
                "spatial_scale": self.spatial_scale}


def _rois(ctx: BuildContext, node: Node, t: Any) -> Any:
    """The rois blob in Caffe's order (an (R, 5, 1, 1) blob arrives NHWC)."""
    return ctx.to_caffe_order(node, t, ctx.rank(node.inputs[1]))


@builder("ROIPooling")
def _roi_pooling(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    layer = CaffeROIPooling(a["pooled"], a["spatial_scale"], name=ctx.name(node))
    return [layer(ins[0], _rois(ctx, node, ins[1]))]


@builder("PSROIPooling")
def _psroi_pooling(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    layer = CaffePSROIPooling(a["output_dim"], a["group_size"], a["spatial_scale"], name=ctx.name(node))
    return [layer(ins[0], _rois(ctx, node, ins[1]))]
