"""The YOLOv3-tiny Caffe ports' pooling size rule (ChenYingpeng/caffe-yolov3, whose copies most public
YOLOv3-tiny ``.prototxt`` / ``.caffemodel`` pairs come from).

darknet's ``[maxpool] size=2 stride=1`` keeps a 13 x 13 map 13 x 13 (its window hangs over the bottom
and right edge). Upstream Caffe sizes that pooling ``ceil((13 - 2) / 1) + 1 = 12``, so the port's net
fails further on, where the upsampled map meets a 26 x 26 one in a Concat. The port ships its own
``caffe_layers/pooling_layer/pooling_layer.cpp`` into Caffe; its ``Reshape`` adds, after upstream's
size::

    if ((kernel_h_ - stride_h_) % 2 == 1) { pooled_height_ += 1; pooled_width_ += 1; }

(then upstream's last-window check when there is padding) and its forward is upstream's: a window is
clipped to the input, so MAX takes the maximum of what is left. Nothing in the prototxt or the
caffemodel says which pooling a net was made for, and the rule changes other poolings too (3 x 3 stride
2 gets one more row and column), so :func:`caffe2x.caffe.reader.build_graph` applies it only to a net
that upstream's rule cannot read, and warns.

Under the rule, a MAX pooling with stride 1, an even square kernel ``k`` and pad ``(k - 2) / 2`` (the
ports' ``kernel_size: 2`` with no pad) is exactly upstream's pooling with one more pad, cropped by one
row and column at the top left: nodes ``<layer>/pool`` (Pooling) and the layer (Crop to the input's
size), which every target has. Other poolings the rule changes are refused with a line saying so.
"""
from __future__ import annotations

from typing import Any

from caffe2x.caffe.reader import FORK_RULE_SOURCES, FORK_RULE_TRIGGERS, FORK_RULES, Composite, SubLayer
from caffe2x.layers.base import BlobSource, Caffe2xError, LayerSpec, Shape
from caffe2x.layers.core import _pooling

RULE = "caffe-yolov3"
SOURCE = ("the YOLOv3-tiny ports' pooling (ChenYingpeng/caffe-yolov3's pooling_layer.cpp: one more output "
          "row and column when kernel - stride is odd)")


def _kernel_stride(p: Any) -> tuple[int, int]:
    kernel = int(p.kernel_h) if p.HasField("kernel_h") else int(p.kernel_size)
    stride = int(p.stride_h) if p.HasField("stride_h") else int(p.stride)
    return kernel, stride


def changes(layer: Any) -> bool:
    """Whether the port's Reshape sizes this layer otherwise than upstream (C++ ``%``: a positive odd
    ``kernel_h - stride_h``)."""
    if layer.type != "Pooling" or layer.pooling_param.global_pooling:
        return False
    kernel, stride = _kernel_stride(layer.pooling_param)
    return kernel - stride > 0 and (kernel - stride) % 2 == 1


def _yolo_pooling(layer: Any, ins: list[Shape], blobs: BlobSource) -> Composite | None:
    if not changes(layer):
        return None
    spec = _pooling(layer, ins, blobs)  # upstream's checks of the settings
    a = spec.attrs
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    if spec.op != "Pooling" or a["method"] != "max" or (sh, sw) != (1, 1) or kh != kw or (ph, pw) != (ph, ph) \
            or 2 * ph != kh - 2:
        raise Caffe2xError(f"layer {layer.name!r} (Pooling): under {SOURCE} this pooling has a size caffe2x does "
                           f"not read (it reads MAX, stride 1, an even square kernel k, pad (k - 2) / 2 and one "
                           f"top, as the ports' kernel_size: 2)")
    pool = LayerSpec("Pooling", {**a, "pad": [ph + 1, ph + 1]})
    crop = LayerSpec("Crop", {"axis": 2, "offsets": [0, 0, 1, 1]})
    return Composite([SubLayer("pool", pool, [0]), SubLayer("", crop, ["pool", 0])])


FORK_RULES[RULE] = {"Pooling": _yolo_pooling}
FORK_RULE_SOURCES[RULE] = SOURCE
FORK_RULE_TRIGGERS[RULE] = changes
