"""Caffe's greedy NMS with an adaptive threshold (``eta < 1``) in ONNX: an ONNX ``Loop`` over each
class's candidates in score order (formulas: :func:`caffe2x.layers.detection.nms`).

``NonMaxSuppression`` has a fixed IoU threshold, while SSD's ``ApplyNMSFast`` multiplies its threshold by
``eta`` after every kept box while the threshold is above 0.5, so a box's fate depends on how many were
kept before it. That is a sequential loop, written here as one: all (image, class) pairs advance
together, one candidate rank per iteration, carrying the kept mask and each pair's threshold.

* candidates: ``TopK`` of the masked scores (pre-NMS ``top_k`` and background already applied; TopK
  keeps the lower index on ties, as Caffe's stable sort), valid when ``score > confidence_threshold``;
* IoU of every candidate pair of a class, float32 in the reference's operation order (inverted boxes
  have size 0, no overlap unless both intersection sides are positive);
* step t keeps candidate t when it is valid and no kept candidate overlaps it by more than the pair's
  current threshold (``not iou <= threshold``, so a NaN overlap suppresses, as in the reference); a
  keep multiplies a threshold above 0.5 by ``eta`` (float32).

The result is ``NonZero`` of the kept mask: rows (image, class, rank) in the order ONNX's
``NonMaxSuppression`` would give (per image, per class, in selection order), the rank mapped back to
the box index."""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder

f32 = np.float32


def _scalar(b: Builder, node: Node, what: str, value: np.ndarray) -> str:
    """A 0-d ``Constant`` (``Builder.const`` makes at least 1-d tensors)."""
    out = b.fresh(f"{node.name}/{what}")
    b.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(value, name=out)))
    return out


def _iou(b: Builder, node: Node, cand: str) -> str:
    """(N, C, K, K) float32 overlaps of a class's candidates ``cand`` (N, C, K, 4), as Caffe's
    JaccardOverlap: ``inter / (size_t + size_s - inter)`` where both sides are positive, else 0."""
    parts = [b.fresh(f"{node.name}/cand{i}") for i in range(4)]
    b.nodes.append(helper.make_node("Split", [cand, b.shape_const(node, "cand_split", [1, 1, 1, 1])], parts,
                                    name=parts[0], axis=-1))
    x1, y1, x2, y2 = parts                                                       # (N, C, K, 1) each
    perm = [0, 1, 3, 2]
    x1s, y1s, x2s, y2s = (b.tmp("Transpose", [p], node, f"cand{i}_row", perm=perm) for i, p in enumerate(parts))
    iw = b.tmp("Sub", [b.tmp("Min", [x2, x2s], node, "min_x2"), b.tmp("Max", [x1, x1s], node, "max_x1")], node, "iw")
    ih = b.tmp("Sub", [b.tmp("Min", [y2, y2s], node, "min_y2"), b.tmp("Max", [y1, y1s], node, "max_y1")], node, "ih")
    inter = b.tmp("Mul", [iw, ih], node, "inter")
    zero = b.const(node, "iou_zero", np.array(0, dtype=f32))
    w = b.tmp("Sub", [x2, x1], node, "cand_w")
    h = b.tmp("Sub", [y2, y1], node, "cand_h")
    inverted = b.tmp("Or", [b.tmp("Less", [w, zero], node, "w_neg"), b.tmp("Less", [h, zero], node, "h_neg")], node,
                     "inverted")
    size = b.tmp("Where", [inverted, zero, b.tmp("Mul", [w, h], node, "area")], node, "size")       # (N, C, K, 1)
    size_row = b.tmp("Transpose", [size], node, "size_row", perm=perm)
    union = b.tmp("Sub", [b.tmp("Add", [size, size_row], node, "sizes"), inter], node, "union")
    iou = b.tmp("Div", [inter, union], node, "iou_raw")
    both = b.tmp("And", [b.tmp("Greater", [iw, zero], node, "iw_pos"), b.tmp("Greater", [ih, zero], node, "ih_pos")],
                 node, "overlapping")
    return b.tmp("Where", [both, iou, zero], node, "iou")


def _body(node: Node, iou: str, valid: str, ranks: str, eta: float) -> Any:
    """The Loop body: (t, cond, kept, threshold) -> (cond, kept, threshold)."""
    p = f"{node.name}/nms_loop/"
    nodes = []

    def add(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [p + out], name=p + out, **attrs))
        return p + out

    def const(out: str, value: np.ndarray) -> str:
        nodes.append(helper.make_node("Constant", [], [p + out], name=p + out,
                                      value=helper.make_tensor(p + out, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                               value.shape, value.ravel().tolist())))
        return p + out

    t, cond, kept, thr = p + "t", p + "cond", p + "kept", p + "threshold"
    iou_t = add("Gather", [iou, t], "iou_t", axis=2)                                    # (N, C, K): t vs each s
    limit = add("Unsqueeze", [thr, const("last", np.array([2], dtype=np.int64))], "limit")
    over = add("Not", [add("LessOrEqual", [iou_t, limit], "within")], "over")
    clash = add("Cast", [add("And", [over, kept], "clash_b")], "clash", to=TensorProto.FLOAT)
    clashes = add("ReduceMax", [clash], "clashes", axes=[2], keepdims=0)  # opset 17: axes an attribute
    free = add("Not", [add("Greater", [clashes, const("zero", np.array(0, dtype=f32))], "suppressed")], "free")
    keep = add("And", [add("Gather", [valid, t], "valid_t", axis=2), free], "keep")            # (N, C)
    mark = add("And", [add("Unsqueeze", [keep, const("last2", np.array([2], dtype=np.int64))], "keep_col"),
                       add("Equal", [ranks, t], "is_t")], "mark")
    kept_out = add("Or", [kept, mark], "kept_out")
    shrink = add("And", [keep, add("Greater", [thr, const("half", np.array(0.5, dtype=f32))], "above_half")], "shrink")
    thr_out = add("Where", [shrink, add("Mul", [thr, const("eta", np.array(eta, dtype=f32))], "scaled"), thr],
                  "threshold_out")
    cond_out = add("Identity", [cond], "cond_out")
    return helper.make_graph(
        nodes, p + "body",
        [helper.make_tensor_value_info(t, TensorProto.INT64, []), helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kept, TensorProto.BOOL, None),
         helper.make_tensor_value_info(thr, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kept_out, TensorProto.BOOL, None),
         helper.make_tensor_value_info(thr_out, TensorProto.FLOAT, None)])


def adaptive_nms(b: Builder, node: Node, boxes: str, scores: str, k: int) -> str:
    """(M, 3) int64 rows (image, class, box index) kept by Caffe's NMS with ``eta``, from ``boxes``
    (N, B, 4) and masked ``scores`` (N, C, B) whose entries outside each class's candidates are -inf."""
    a = node.attrs
    values, ranked = b.fresh(f"{node.name}/cand_scores"), b.fresh(f"{node.name}/cand_index")
    b.nodes.append(helper.make_node("TopK", [scores, b.shape_const(node, "cand_k", [k])], [values, ranked],
                                    name=values, axis=-1, largest=1, sorted=1))                  # (N, C, K)
    valid = b.tmp("Greater", [values, b.const(node, "conf_thr", np.array(a["confidence_threshold"], dtype=f32))],
                  node, "valid")
    flat = b.tmp("Reshape", [ranked, b.shape_const(node, "ranked_flat", [0, -1, 1])], node, "ranked_flat")
    cand = b.tmp("GatherND", [boxes, flat], node, "cand_flat", batch_dims=1)                      # (N, C*K, 4)
    cand = b.tmp("Reshape", [cand, b.shape_const(node, "cand_shape", [0, -1, k, 4])], node, "cand_boxes")
    iou = _iou(b, node, cand)
    ranks = b.const(node, "ranks", np.arange(k, dtype=np.int64))
    none_kept = b.tmp("Less", [values, b.const(node, "minus_inf", np.array(-np.inf, dtype=f32))], node, "kept0")
    per_class = b.tmp("Shape", [b.tmp("ReduceMax", [values], node, "best", axes=[2], keepdims=0)], node, "pairs")
    thr0 = b.tmp("Expand", [b.const(node, "nms_thr", np.array(a["nms_threshold"], dtype=f32)), per_class], node,
                 "thr0")
    kept, thr = b.fresh(f"{node.name}/kept"), b.fresh(f"{node.name}/thr_final")
    b.nodes.append(helper.make_node(
        "Loop", [_scalar(b, node, "steps", np.array(k, dtype=np.int64)), _scalar(b, node, "go", np.array(True)),
                 none_kept, thr0], [kept, thr], name=kept,
        body=_body(node, iou, valid, ranks, float(a["eta"]))))
    picked = b.tmp("Transpose", [b.tmp("NonZero", [kept], node, "picked_t")], node, "picked", perm=[1, 0])  # (M, 3)
    box = b.tmp("Unsqueeze", [b.tmp("GatherND", [ranked, picked], node, "picked_box"),
                              b.shape_const(node, "ax_box", [1])], node, "box_col")
    image_class = b.tmp("Slice", [picked, b.shape_const(node, "ic0", [0]), b.shape_const(node, "ic1", [2]),
                                  b.shape_const(node, "ic_ax", [1])], node, "image_class")
    return b.tmp("Concat", [image_class, box], node, "selected", axis=1)
