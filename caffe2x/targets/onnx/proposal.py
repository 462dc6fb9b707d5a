"""py-faster-rcnn's proposal layer in ONNX opset 17 (formulas: :mod:`caffe2x.layers.proposal`).

The anchors of every cell and their widths and centres are constants computed at conversion with the
reference's float32 operations (the feature map's size is static in the model); decoding, clipping and
the min-size filter are plain arithmetic; ``TopK`` of the scores with the filtered boxes at -inf sorts
them (TopK keeps the lower index of equal values first: the reference's stable sort).

ONNX's ``NonMaxSuppression`` is not used: it has no "+1" area convention (shifting the corners by
one changes the float32 rounding of the widths, so an overlap near the threshold could come out on
the other side) and onnxruntime orders equal scores as it likes. The greedy loop is an ONNX ``Loop``
instead, one candidate per iteration in score order, with the reference's float32 operations: a
candidate neither filtered nor suppressed is kept and suppresses the later candidates overlapping it
by more than the threshold; the loop stops after ``post_nms_topn`` keeps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter

f32 = np.float32


def _anchor_terms(a: dict[str, Any], height: int, width: int) -> dict[str, np.ndarray]:
    """The anchors' widths, heights and centres (K,), float32 in the reference's operation order."""
    stride = a["feat_stride"]
    sx, sy = np.meshgrid(np.arange(width) * stride, np.arange(height) * stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1).astype(np.float64)
    anchors = (np.asarray(a["anchors"], np.float64)[None] + shifts[:, None]).reshape(-1, 4).astype(np.float32)
    widths = anchors[:, 2] - anchors[:, 0] + f32(1)
    heights = anchors[:, 3] - anchors[:, 1] + f32(1)
    return {"widths": widths, "heights": heights, "ctr_x": anchors[:, 0] + f32(0.5) * widths,
            "ctr_y": anchors[:, 1] + f32(0.5) * heights}


def _scalar(b: Builder, node: Node, what: str, value: np.ndarray) -> str:
    out = b.fresh(f"{node.name}/{what}")
    b.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(value, name=out)))
    return out


def _body(node: Node, cols: list[str], areas: str, alive: str, positions: str, thresh: float, limit: int) -> Any:
    """The Loop body: (i, cond, kept, suppressed, n) -> (cond, kept, suppressed, n)."""
    p = f"{node.name}/nms_loop/"
    nodes: list[Any] = []

    def add(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [p + out], name=p + out, **attrs))
        return p + out

    def const(out: str, value: np.ndarray) -> str:
        nodes.append(helper.make_node("Constant", [], [p + out], name=p + out,
                                      value=numpy_helper.from_array(value, name=p + out)))
        return p + out

    i, cond, kept, suppressed, n = p + "i", p + "cond", p + "kept", p + "suppressed", p + "n"
    one, zero = const("one", np.array(1, dtype=f32)), const("zero", np.array(0, dtype=f32))
    x1, y1, x2, y2 = cols
    at = {c: add("Gather", [c, i], f"{k}_i", axis=0) for k, c in zip(("x1", "y1", "x2", "y2", "area"), (*cols, areas))}
    w = add("Max", [add("Add", [add("Sub", [add("Min", [at[x2], x2], "min_x2"), add("Max", [at[x1], x1], "max_x1")],
                                    "iw_raw"), one], "iw_1"), zero], "iw")
    h = add("Max", [add("Add", [add("Sub", [add("Min", [at[y2], y2], "min_y2"), add("Max", [at[y1], y1], "max_y1")],
                                    "ih_raw"), one], "ih_1"), zero], "ih")
    inter = add("Mul", [w, h], "inter")
    iou = add("Div", [inter, add("Sub", [add("Add", [at[areas], areas], "areas_sum"), inter], "union")], "iou")
    take = add("And", [add("Gather", [alive, i], "alive_i", axis=0),
                       add("Not", [add("Gather", [suppressed, i], "suppressed_i", axis=0)], "free_i")], "take")
    later = add("Greater", [positions, i], "later")
    hit = add("And", [take, add("And", [later, add("Greater", [iou, const("thr", np.array(thresh, dtype=f32))],
                                                    "over")], "later_over")], "hit")
    suppressed_out = add("Or", [suppressed, hit], "suppressed_out")
    kept_out = add("Or", [kept, add("And", [take, add("Equal", [positions, i], "is_i")], "mark")], "kept_out")
    n_out = add("Add", [n, add("Cast", [take], "take_i", to=TensorProto.INT64)], "n_out")
    cond_out = add("Less", [n_out, const("limit", np.array(limit, dtype=np.int64))], "cond_out")
    return helper.make_graph(
        nodes, p + "body",
        [helper.make_tensor_value_info(i, TensorProto.INT64, []), helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kept, TensorProto.BOOL, None),
         helper.make_tensor_value_info(suppressed, TensorProto.BOOL, None),
         helper.make_tensor_value_info(n, TensorProto.INT64, [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(kept_out, TensorProto.BOOL, None),
         helper.make_tensor_value_info(suppressed_out, TensorProto.BOOL, None),
         helper.make_tensor_value_info(n_out, TensorProto.INT64, [])])


@converter("Proposal")
def _proposal(b: Builder, node: Node) -> None:
    a = node.attrs
    count = len(a["anchors"])
    _, _, height, width = b.shape(node.inputs[0])
    total = height * width * count
    i64 = np.int64

    def fconst(what: str, value: Any) -> str:
        return b.const(node, what, np.asarray(value, dtype=f32))

    def pick(t: str, index: int, what: str) -> str:
        return b.tmp("Gather", [t, _scalar(b, node, f"{what}_at", np.array(index, dtype=i64))], node, what, axis=-1)

    fg = b.tmp("Slice", [b.inp(node, 0), b.shape_const(node, "fg_lo", [count]), b.shape_const(node, "fg_hi", [2 * count]),
                         b.shape_const(node, "fg_ax", [1])], node, "fg_nchw")
    fg = b.tmp("Reshape", [b.tmp("Transpose", [fg], node, "fg_nhwc", perm=[0, 2, 3, 1]), b.shape_const(node, "flat", [-1])],
               node, "fg")
    d = b.tmp("Reshape", [b.tmp("Transpose", [b.inp(node, 1)], node, "deltas_nhwc", perm=[0, 2, 3, 1]),
                          b.shape_const(node, "d_shape", [-1, 4])], node, "deltas")
    info = b.tmp("Reshape", [b.inp(node, 2), b.shape_const(node, "info_flat", [-1])], node, "info")
    terms = {k: fconst(k, v) for k, v in _anchor_terms(a, height, width).items()}
    dx, dy, dw, dh = (pick(d, j, f"d{j}") for j in range(4))
    half, one, zero = fconst("half", 0.5), fconst("one", 1.0), fconst("zero", 0.0)
    px = b.tmp("Add", [b.tmp("Mul", [dx, terms["widths"]], node, "dx_w"), terms["ctr_x"]], node, "px")
    py = b.tmp("Add", [b.tmp("Mul", [dy, terms["heights"]], node, "dy_h"), terms["ctr_y"]], node, "py")
    pw = b.tmp("Mul", [b.tmp("Exp", [dw], node, "exp_w"), terms["widths"]], node, "pw")
    ph = b.tmp("Mul", [b.tmp("Exp", [dh], node, "exp_h"), terms["heights"]], node, "ph")
    hw = b.tmp("Mul", [half, pw], node, "half_w")
    hh = b.tmp("Mul", [half, ph], node, "half_h")
    max_x = b.tmp("Sub", [pick(info, 1, "im_w"), one], node, "max_x")
    max_y = b.tmp("Sub", [pick(info, 0, "im_h"), one], node, "max_y")

    def clip(v: str, top: str, what: str) -> str:
        return b.tmp("Max", [b.tmp("Min", [v, top], node, f"{what}_min"), zero], node, what)

    x1 = clip(b.tmp("Sub", [px, hw], node, "x1_raw"), max_x, "x1")
    y1 = clip(b.tmp("Sub", [py, hh], node, "y1_raw"), max_y, "y1")
    x2 = clip(b.tmp("Add", [px, hw], node, "x2_raw"), max_x, "x2")
    y2 = clip(b.tmp("Add", [py, hh], node, "y2_raw"), max_y, "y2")
    min_size = b.tmp("Mul", [fconst("min_size", a["min_size"]), pick(info, 2, "im_scale")], node, "min_size_scaled")
    ws = b.tmp("Add", [b.tmp("Sub", [x2, x1], node, "ws_raw"), one], node, "ws")
    hs = b.tmp("Add", [b.tmp("Sub", [y2, y1], node, "hs_raw"), one], node, "hs")
    valid = b.tmp("And", [b.tmp("GreaterOrEqual", [ws, min_size], node, "w_ok"),
                          b.tmp("GreaterOrEqual", [hs, min_size], node, "h_ok")], node, "valid")
    k = min(a["pre_nms_topn"], total) if a["pre_nms_topn"] > 0 else total
    masked = b.tmp("Where", [valid, fg, fconst("neg_inf", -np.inf)], node, "masked")
    top_scores, order = b.fresh(f"{node.name}/top_scores"), b.fresh(f"{node.name}/order")
    b.nodes.append(helper.make_node("TopK", [masked, b.shape_const(node, "k", [k])], [top_scores, order],
                                    name=top_scores, axis=0, largest=1, sorted=1))
    alive = b.tmp("Gather", [valid, order], node, "alive", axis=0)
    cols = [b.tmp("Gather", [c, order], node, f"s{c.rsplit('/', 1)[-1]}", axis=0) for c in (x1, y1, x2, y2)]
    areas = b.tmp("Mul", [b.tmp("Add", [b.tmp("Sub", [cols[2], cols[0]], node, "aw_raw"), one], node, "aw"),
                          b.tmp("Add", [b.tmp("Sub", [cols[3], cols[1]], node, "ah_raw"), one], node, "ah")],
                  node, "areas")
    positions = b.const(node, "positions", np.arange(k, dtype=i64))
    limit = a["post_nms_topn"] if a["post_nms_topn"] > 0 else k
    none = b.const(node, "none", np.zeros(k, dtype=bool))
    kept, suppressed, n = (b.fresh(f"{node.name}/{w}") for w in ("kept", "suppressed_final", "n_final"))
    b.nodes.append(helper.make_node(
        "Loop", [_scalar(b, node, "steps", np.array(k, dtype=i64)), _scalar(b, node, "go", np.array(True)),
                 none, none, _scalar(b, node, "n0", np.array(0, dtype=i64))], [kept, suppressed, n], name=kept,
        body=_body(node, cols, areas, alive, positions, float(a["nms_thresh"]), limit)))
    index = b.tmp("Reshape", [b.tmp("NonZero", [kept], node, "kept_at"), b.shape_const(node, "index_flat", [-1])],
                  node, "index")
    boxes = b.tmp("Gather", [b.tmp("Concat", [b.tmp("Unsqueeze", [c, b.shape_const(node, f"ax{j}", [1])], node,
                                                     f"col{j}") for j, c in enumerate(cols)],
                                   node, "boxes", axis=1), index], node, "chosen", axis=0)
    rows = b.tmp("Shape", [index], node, "rows")
    zeros = b.tmp("ConstantOfShape", [b.tmp("Concat", [rows, b.shape_const(node, "one_col", [1])], node, "zshape", axis=0)],
                  node, "batch_col", value=numpy_helper.from_array(np.zeros(1, dtype=f32)))
    b.add("Concat", [zeros, boxes], b.out(node, 0), node.name, axis=1)
    if a["with_scores"]:
        picked = b.tmp("Gather", [top_scores, index], node, "picked_scores", axis=0)
        b.add("Unsqueeze", [picked, b.shape_const(node, "score_ax", [1])], b.out(node, 1), f"{node.name}/scores")
