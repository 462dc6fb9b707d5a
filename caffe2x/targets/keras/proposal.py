"""py-faster-rcnn's proposal layer as a registered Keras layer written with ``keras.ops`` (formulas:
:mod:`caffe2x.layers.proposal`). Inputs: cls_prob and bbox_pred NHWC (1, H, W, 2A / 4A), im_info (1, 3);
outputs rois (R, 5) (and scores (R, 1)), R data-dependent.

TF's ``tf.image.non_max_suppression`` is not used: it measures boxes without py-faster-rcnn's "+1"
(shifting the corners by one changes the float32 rounding of every width, so overlaps near the
threshold could fall on the other side) and is not a ``keras.ops`` function. Instead the greedy loop
runs as ``ops.while_loop`` with the reference's float32 operations, one step per *kept* box (at most
``post_nms_topn``, not one per candidate: eager Keras runs each step as Python, and 6000 candidates
took seconds): each step keeps the first candidate in score order that is still alive (valid and not
suppressed) and suppresses every other one overlapping it by more than the threshold; the candidates
before it are already kept or suppressed, so this is the reference's greedy scan exactly. Sorting is
``ops.top_k`` of the scores with the filtered boxes at -inf, which keeps the lower index of equal
scores first (the reference's stable sort).
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.layers import CUSTOM_OBJECTS
from caffe2x.targets.keras.ops import BuildContext, builder


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeProposal(keras.layers.Layer):
    """Faster R-CNN's RPN proposals (see the module docstring)."""

    def __init__(self, proposal: dict[str, Any], cells: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.proposal = dict(proposal)
        self.cells = int(cells)

    def compute_output_spec(self, scores: Any, deltas: Any, im_info: Any) -> Any:
        rois = keras.KerasTensor((None, 5), dtype="float32")
        if self.proposal["with_scores"]:
            return [rois, keras.KerasTensor((None, 1), dtype="float32")]
        return rois

    def _anchors(self, height: int, width: int) -> np.ndarray:
        """Every cell's anchors in (h, w, anchor) order, float64 sums then float32 (a constant: the
        feature map's size is static in the model)."""
        stride = self.proposal["feat_stride"]
        sx, sy = np.meshgrid(np.arange(width) * stride, np.arange(height) * stride)
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1).astype(np.float64)
        base = np.asarray(self.proposal["anchors"], dtype=np.float64)
        return (base[None] + shifts[:, None]).reshape(-1, 4).astype(np.float32)

    def call(self, scores: Any, deltas: Any, im_info: Any) -> Any:
        a = self.proposal
        count = len(a["anchors"])
        height, width = int(scores.shape[1]), int(scores.shape[2])
        total = height * width * count
        fg = ops.reshape(ops.cast(scores[0, :, :, count:], "float32"), (-1,))
        d = ops.reshape(ops.cast(deltas[0], "float32"), (-1, 4))
        info = ops.reshape(ops.cast(im_info, "float32"), (-1,))
        anchors = ops.convert_to_tensor(self._anchors(height, width))
        one, half = np.float32(1), np.float32(0.5)
        widths = anchors[:, 2] - anchors[:, 0] + one
        heights = anchors[:, 3] - anchors[:, 1] + one
        ctr_x = anchors[:, 0] + half * widths
        ctr_y = anchors[:, 1] + half * heights
        px = d[:, 0] * widths + ctr_x
        py = d[:, 1] * heights + ctr_y
        pw = ops.exp(d[:, 2]) * widths
        ph = ops.exp(d[:, 3]) * heights
        zero = np.float32(0)
        max_x, max_y = info[1] - one, info[0] - one
        x1 = ops.maximum(ops.minimum(px - half * pw, max_x), zero)
        y1 = ops.maximum(ops.minimum(py - half * ph, max_y), zero)
        x2 = ops.maximum(ops.minimum(px + half * pw, max_x), zero)
        y2 = ops.maximum(ops.minimum(py + half * ph, max_y), zero)
        min_size = np.float32(a["min_size"]) * info[2]
        valid = ops.logical_and(x2 - x1 + one >= min_size, y2 - y1 + one >= min_size)
        k = min(a["pre_nms_topn"], total) if a["pre_nms_topn"] > 0 else total
        neg_inf = np.float32(-np.inf)
        top_scores, order = ops.top_k(ops.where(valid, fg, neg_inf), k, sorted=True)
        alive = ops.take(valid, order)
        boxes = ops.take(ops.stack([x1, y1, x2, y2], axis=1), order, axis=0)            # (k, 4)
        bx1, by1, bx2, by2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        areas = (bx2 - bx1 + one) * (by2 - by1 + one)
        thr = np.float32(a["nms_thresh"])
        limit = a["post_nms_topn"] if a["post_nms_topn"] > 0 else k
        positions = ops.arange(k, dtype="int32")

        def cond(n: Any, kept: Any, alive: Any) -> Any:
            return ops.logical_and(ops.less(n, limit), ops.any(alive))

        def body(n: Any, kept: Any, alive: Any) -> Any:
            # the first candidate still alive is kept; it suppresses every later one past the threshold
            i = ops.cast(ops.argmax(ops.cast(alive, "int32")), "int32")
            w = ops.maximum(zero, ops.minimum(ops.take(bx2, i), bx2) - ops.maximum(ops.take(bx1, i), bx1) + one)
            h = ops.maximum(zero, ops.minimum(ops.take(by2, i), by2) - ops.maximum(ops.take(by1, i), by1) + one)
            inter = w * h
            iou = inter / (ops.take(areas, i) + areas - inter)
            here = ops.equal(positions, i)
            alive = ops.logical_and(alive, ops.logical_not(ops.logical_or(here, iou > thr)))
            return n + 1, ops.logical_or(kept, here), alive

        start = (ops.convert_to_tensor(0, dtype="int32"), ops.zeros((k,), dtype="bool"), alive)
        _, kept, _ = ops.while_loop(cond, body, start)
        (index,) = ops.nonzero(kept)
        chosen = ops.take(boxes, index, axis=0)
        rois = ops.concatenate([ops.zeros_like(chosen[:, :1]), chosen], axis=1)
        if a["with_scores"]:
            return [rois, ops.expand_dims(ops.take(top_scores, index), 1)]
        return rois

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "proposal": self.proposal, "cells": self.cells}


CUSTOM_OBJECTS.update({"CaffeProposal": CaffeProposal})


@builder("Proposal")
def _proposal(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    _, _, h, w = ctx.shape(node.inputs[0])
    layer = CaffeProposal(node.attrs, h * w, name=ctx.name(node))
    out = layer(*ins)
    return list(out) if isinstance(out, (list, tuple)) else [out]
