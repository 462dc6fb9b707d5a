"""ROIPooling and PSROIPooling in the Keras target: refused with a clear error.

Both pool a data-dependent window per region; ``keras.ops`` has no region pooling, and a dense rewrite
(a mask over the whole feature map per region and bin) needs memory in regions x bins x H x W x C,
gigabytes for a real Faster R-CNN / R-FCN head. Convert those nets to torch (exact) or ONNX
(ROIPooling), or cut them before the layer with ``--outputs``.
"""
from __future__ import annotations

from typing import Any

from ...errors import Caffe2xError
from ...ir import Node
from .ops import BuildContext, builder


@builder("ROIPooling", "PSROIPooling")
def _region_pooling(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    raise Caffe2xError(f"layer {node.name!r} ({node.op}): the keras target has no region pooling; convert to torch"
                       f"{' or onnx' if node.op == 'ROIPooling' else ''}, or cut the net before it with --outputs")
