"""Region pooling: ROIPooling (Fast/Faster R-CNN, rbgirshick/caffe-fast-rcnn) and PSROIPooling (R-FCN,
daijifeng001/caffe-rfcn).

Both read the feature map and a blob of regions, one row ``[batch_index, x1, y1, x2, y2]`` per region
in input-image pixels (``(R, 5)``, or ``(R, 5, 1, 1)``).

=============  =====================================  ================================================
op             attrs                                  output
=============  =====================================  ================================================
ROIPooling     pooled [h, w], spatial_scale           ``(R, C, pooled_h, pooled_w)``
PSROIPooling   output_dim, group_size, spatial_scale  ``(R, output_dim, group_size, group_size)``
=============  =====================================  ================================================

ROIPooling (``roi_pooling_layer.cpp``): region corners ``round(coord * spatial_scale)`` (C's round,
half away from zero), size ``max(end - start + 1, 1)``; bin ``(ph, pw)`` covers rows
``floor(ph * bin_h) .. ceil((ph + 1) * bin_h)`` (``bin_h = size / pooled_h`` as a float) shifted by
the start and clipped to the map; MAX over the bin, 0 for an empty bin.

PSROIPooling (the fork's CUDA kernel; it has no CPU code): ``start = round(x1) * spatial_scale``,
``end = (round(x2) + 1) * spatial_scale``, size ``max(end - start, 0.1)``; bin rows
``floor(ph * bin_h + start) .. ceil((ph + 1) * bin_h + start)`` clipped to the map; output channel
``k`` at bin ``(ph, pw)`` averages input channel ``(k * group_size + ph) * group_size + pw`` over the
bin (0 when empty).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph, Node, Shape, shape_function
from caffe2x.graph.reference import op as reference_op

f32 = np.float32


def _inputs(layer: Any, ins: list[Shape]) -> tuple[Shape, Shape]:
    if len(ins) != 2:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes 2 inputs (features, rois), got {len(ins)}")
    x, rois = ins
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) needs 4-D features, got {list(x)}")
    if int(np.prod(rois[1:])) != 5:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): rois must be (R, 5), got {list(rois)}")
    return x, rois


def c_round(v: np.ndarray) -> np.ndarray:
    """C's ``round`` (half away from zero) of float32 values, as int64."""
    d = np.asarray(v, dtype=np.float64)
    return (np.sign(d) * np.floor(np.abs(d) + 0.5)).astype(np.int64)


# =========================================================================== ROIPooling
@layer_handler("ROIPooling")
def _roi_pooling_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _inputs(layer, ins)
    p = layer.roi_pooling_param
    pooled = [int(p.pooled_h), int(p.pooled_w)]
    if min(pooled) <= 0:
        raise Caffe2xError(f"layer {layer.name!r} (ROIPooling): pooled_h and pooled_w must be positive")
    return LayerSpec("ROIPooling", {"pooled": pooled, "spatial_scale": float(p.spatial_scale)})


@shape_function("ROIPooling")
def _roi_pooling_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, rois = ins
    return [(rois[0], x[1], *node.attrs["pooled"])]


def roi_bins(rois: np.ndarray, spatial_scale: float, pooled: list[int], height: int, width: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROIPooling's windows: batch index (R,), row start/end (R, ph), column start/end (R, pw)."""
    rois = rois.reshape(-1, 5).astype(np.float32)
    batch = rois[:, 0].astype(np.int64)
    corners = c_round(rois[:, 1:] * f32(spatial_scale))  # x1, y1, x2, y2 on the feature map
    ph, pw = pooled

    def axis(start: np.ndarray, end: np.ndarray, bins: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        extent = np.maximum(end - start + 1, 1)
        bin_size = (extent.astype(np.float32) / f32(bins)).astype(np.float32)[:, None]
        k = np.arange(bins, dtype=np.float32)[None, :]
        lo = np.floor(k * bin_size).astype(np.int64) + start[:, None]
        hi = np.ceil((k + f32(1)) * bin_size).astype(np.int64) + start[:, None]
        return np.clip(lo, 0, size), np.clip(hi, 0, size)

    hs, he = axis(corners[:, 1], corners[:, 3], ph, height)
    ws, we = axis(corners[:, 0], corners[:, 2], pw, width)
    return batch, hs, he, ws, we


def roi_pooling(x: np.ndarray, rois: np.ndarray, pooled: list[int], spatial_scale: float,
                layer: str = "ROIPooling") -> np.ndarray:
    n, c, h, w = x.shape
    batch, hs, he, ws, we = roi_bins(rois, spatial_scale, pooled, h, w)
    if batch.size and (batch.min() < 0 or batch.max() >= n):
        raise Caffe2xError(f"layer {layer!r} (ROIPooling): a region names image {int(batch.max())}, the batch has {n}")
    out = np.zeros((len(batch), c, *pooled), dtype=np.float32)
    for r in range(len(batch)):
        img = x[batch[r]]
        for i in range(pooled[0]):
            for j in range(pooled[1]):
                if he[r, i] > hs[r, i] and we[r, j] > ws[r, j]:
                    out[r, :, i, j] = img[:, hs[r, i]:he[r, i], ws[r, j]:we[r, j]].max(axis=(1, 2))
    return out


@reference_op("ROIPooling")
def _roi_pooling(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    a = node.attrs
    return [roi_pooling(ins[0], ins[1], a["pooled"], a["spatial_scale"], node.name)]


# =========================================================================== PSROIPooling
@layer_handler("PSROIPooling")
def _psroi_pooling_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x, _ = _inputs(layer, ins)
    p = layer.psroi_pooling_param
    dim, group = int(p.output_dim), int(p.group_size)
    if dim <= 0 or group <= 0:
        raise Caffe2xError(f"layer {layer.name!r} (PSROIPooling): output_dim and group_size must be positive")
    if x[1] != dim * group * group:
        raise Caffe2xError(f"layer {layer.name!r} (PSROIPooling): input has {x[1]} channels, output_dim x "
                           f"group_size^2 is {dim * group * group}")
    return LayerSpec("PSROIPooling", {"output_dim": dim, "group_size": group,
                                      "spatial_scale": float(p.spatial_scale)})


@shape_function("PSROIPooling")
def _psroi_pooling_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, rois = ins
    g = node.attrs["group_size"]
    return [(rois[0], node.attrs["output_dim"], g, g)]


def psroi_bins(rois: np.ndarray, spatial_scale: float, group: int, height: int, width: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PSROIPooling's windows: batch index (R,), row start/end (R, g), column start/end (R, g)."""
    rois = rois.reshape(-1, 5).astype(np.float32)
    batch = rois[:, 0].astype(np.int64)
    scale = f32(spatial_scale)
    rounded = c_round(rois[:, 1:]).astype(np.float32)
    start = rounded[:, :2] * scale                                # x1, y1
    end = (rounded[:, 2:] + f32(1)).astype(np.float32) * scale    # x2 + 1, y2 + 1
    extent = np.maximum(end - start, f32(0.1)).astype(np.float32)
    bin_size = (extent / f32(group)).astype(np.float32)
    k = np.arange(group, dtype=np.float32)[None, :]

    def axis(i: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.floor(k * bin_size[:, i:i + 1] + start[:, i:i + 1]).astype(np.int64)
        hi = np.ceil((k + f32(1)) * bin_size[:, i:i + 1] + start[:, i:i + 1]).astype(np.int64)
        return np.clip(lo, 0, size), np.clip(hi, 0, size)

    hs, he = axis(1, height)
    ws, we = axis(0, width)
    return batch, hs, he, ws, we


def psroi_pooling(x: np.ndarray, rois: np.ndarray, output_dim: int, group: int, spatial_scale: float,
                  layer: str = "PSROIPooling") -> np.ndarray:
    n, c, h, w = x.shape
    batch, hs, he, ws, we = psroi_bins(rois, spatial_scale, group, h, w)
    if batch.size and (batch.min() < 0 or batch.max() >= n):
        raise Caffe2xError(f"layer {layer!r} (PSROIPooling): a region names image {int(batch.max())}, the batch has {n}")
    grouped = x.reshape(n, output_dim, group, group, h, w)
    out = np.zeros((len(batch), output_dim, group, group), dtype=np.float32)
    for r in range(len(batch)):
        for i in range(group):
            for j in range(group):
                area = (he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j])
                if he[r, i] > hs[r, i] and we[r, j] > ws[r, j]:
                    window = grouped[batch[r], :, i, j, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                    out[r, :, i, j] = window.sum(axis=(1, 2), dtype=np.float32) / f32(area)
    return out


@reference_op("PSROIPooling")
def _psroi_pooling(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    a = node.attrs
    return [psroi_pooling(ins[0], ins[1], a["output_dim"], a["group_size"], a["spatial_scale"], node.name)]


__all__ = ["roi_pooling", "psroi_pooling", "roi_bins", "psroi_bins", "c_round"]
