"""ROIPooling in ONNX opset 17: the standard ``MaxRoiPool`` is Fast R-CNN's layer (corners rounded,
``+ 1`` sizes, floor/ceil bins, empty bins 0; checked against the reference). PSROIPooling has no ONNX
operator and a dense rewrite would need memory in regions x channels x height x width, so it is
refused with a :class:`~caffe2x.errors.Caffe2xError` naming the layer."""
from __future__ import annotations

from ...errors import Caffe2xError
from ...ir import Node
from .ops import Builder, converter


@converter("ROIPooling")
def _roi_pooling(b: Builder, node: Node) -> None:
    a = node.attrs
    rois = b.inp(node, 1)
    if len(b.shape(node.inputs[1])) != 2:
        rois = b.tmp("Reshape", [rois, b.shape_const(node, "rois_shape", [-1, 5])], node, "rois")
    b.add("MaxRoiPool", [b.inp(node, 0), rois], b.out(node), node.name, pooled_shape=list(a["pooled"]),
          spatial_scale=float(a["spatial_scale"]))


@converter("PSROIPooling")
def _psroi_pooling(b: Builder, node: Node) -> None:
    raise Caffe2xError(f"layer {node.name!r} (PSROIPooling): ONNX has no position-sensitive ROI pooling operator; "
                       f"convert to torch, or cut the net before it with --outputs")
