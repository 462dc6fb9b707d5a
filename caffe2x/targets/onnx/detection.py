"""SSD's Normalize, PriorBox and DetectionOutput in ONNX opset 17 (formulas:
:mod:`caffe2x.layers.detection`).

* Normalize: ReduceSum of squares, ``+ eps``, Sqrt, Div, Mul by the scale.
* PriorBox: its output depends only on the shapes, so at the read size it is a ``Constant`` computed
  by the numpy reference; when its image size follows a symbolic input it is computed in the graph
  (:mod:`.dynamic_layers`).
* DetectionOutput: decoding in plain arithmetic, then ONNX ``NonMaxSuppression`` -- which is Caffe's
  greedy NMS (strict ``score > threshold``, suppression when ``IoU > threshold``, same float32 IoU for
  well-formed boxes) once Caffe's *pre*-NMS ``top_k`` is applied by masking every score outside its
  class's ``top_k`` best (TopK keeps the lower index on ties, as Caffe's stable sort does), the
  background class is masked, and ``max_output_boxes_per_class`` is the number of priors. Not shared
  locations use one box set per class (C x P boxes, each class's scores masked to its own block).
  ``keep_top_k`` keeps, per image, the detections ranked below it by (score, NMS order).
  ONNX's NMS has no adaptive threshold: with **eta < 1** the greedy loop is an ONNX ``Loop``
  (:mod:`.adaptive_nms`) producing the same selection rows. Inverted boxes
  (``xmax < xmin``, possible with CORNER codes) differ too: Caffe gives them size 0, onnxruntime
  reorders their corners.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from caffe2x.graph.formulas import prior_boxes, prior_follows_input
from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.adaptive_nms import adaptive_nms
from caffe2x.targets.onnx.ops import Builder, converter

f32 = np.float32


def _scalar(b: Builder, node: Node, what: str, value: float | int, dtype: type) -> str:
    """A 0-d ``Constant`` (``Builder.const`` makes at least 1-d tensors)."""
    out = b.fresh(f"{node.name}/{what}")
    b.nodes.append(helper.make_node("Constant", [], [out], name=out,
                                    value=numpy_helper.from_array(np.array(value, dtype=dtype), name=out)))
    return out


@converter("Normalize")
def _normalize(b: Builder, node: Node) -> None:
    a = node.attrs
    rank = b.rank(node.inputs[0])
    x = b.inp(node)
    sq = b.tmp("Mul", [x, x], node, "square")
    axes = list(range(1, rank)) if a["across_spatial"] else [1]
    total = b.tmp("ReduceSum", [sq, b.shape_const(node, "axes", axes)], node, "sum", keepdims=1)
    shifted = b.tmp("Add", [total, b.const(node, "eps", np.array(a["eps"], dtype=f32))], node, "sum_eps")
    norm = b.tmp("Sqrt", [shifted], node, "norm")
    y = b.tmp("Div", [x, norm], node, "normalized")
    c = b.shape(node.inputs[0])[1]
    shape = (1,) if a["channel_shared"] else (c, *(1,) * (rank - 2))
    b.add("Mul", [y, b.param_reshaped(node, "weight", shape)], b.out(node), node.name)


@converter("PriorBox")
def _prior_box(b: Builder, node: Node) -> None:
    if prior_follows_input(node.attrs) and any(b.varies(v) for v in node.inputs):
        from caffe2x.targets.onnx.dynamic_layers import prior_box

        prior_box(b, node)
        return
    _, _, h, w = b.shape(node.inputs[0])
    tensor = numpy_helper.from_array(prior_boxes(node.attrs, h, w), name=b.out(node))
    b.nodes.append(helper.make_node("Constant", [], [b.out(node)], name=node.name, value=tensor))


def _split4(b: Builder, node: Node, t: str, what: str) -> list[str]:
    """The four coordinates of a (..., 4) tensor as (..., 1) tensors."""
    outs = [b.fresh(f"{node.name}/{what}{i}") for i in range(4)]
    b.nodes.append(helper.make_node("Split", [t, b.shape_const(node, f"{what}_split", [1, 1, 1, 1])], outs,
                                    name=outs[0], axis=-1))
    return outs


def _decode(b: Builder, node: Node, loc: str, prior: str, var: str) -> str:
    """Caffe's DecodeBBox on ``loc`` (..., P, 4) against priors/variances (P, 4): (..., P, 4)."""
    a = node.attrs
    code = a["code_type"]
    if a["variance_encoded_in_target"]:
        var = b.const(node, "unit_variance", np.ones((1, 4), dtype=f32))
    if code == "corner":
        b_scaled = b.tmp("Mul", [var, loc], node, "scaled")
        return b.tmp("Add", [prior, b_scaled], node, "decoded")
    px0, py0, px1, py1 = _split4(b, node, prior, "prior")
    v0, v1, v2, v3 = _split4(b, node, var, "var")
    l0, l1, l2, l3 = _split4(b, node, loc, "loc")
    pw = b.tmp("Sub", [px1, px0], node, "prior_w")
    ph = b.tmp("Sub", [py1, py0], node, "prior_h")
    two = b.const(node, "two", np.array(2, dtype=f32))

    def mul(*xs: str) -> str:
        acc = xs[0]
        for x in xs[1:]:
            acc = b.tmp("Mul", [acc, x], node, "mul")
        return acc

    if code == "center_size":
        pcx = b.tmp("Div", [b.tmp("Add", [px0, px1], node, "px_sum"), two], node, "pcx")
        pcy = b.tmp("Div", [b.tmp("Add", [py0, py1], node, "py_sum"), two], node, "pcy")
        cx = b.tmp("Add", [mul(v0, l0, pw), pcx], node, "cx")
        cy = b.tmp("Add", [mul(v1, l1, ph), pcy], node, "cy")
        bw = mul(b.tmp("Exp", [mul(v2, l2)], node, "exp_w"), pw)
        bh = mul(b.tmp("Exp", [mul(v3, l3)], node, "exp_h"), ph)
        hw = b.tmp("Div", [bw, two], node, "half_w")
        hh = b.tmp("Div", [bh, two], node, "half_h")
        parts = [b.tmp("Sub", [cx, hw], node, "xmin"), b.tmp("Sub", [cy, hh], node, "ymin"),
                 b.tmp("Add", [cx, hw], node, "xmax"), b.tmp("Add", [cy, hh], node, "ymax")]
    else:  # corner_size
        parts = [b.tmp("Add", [p, mul(v, l, s)], node, "corner")
                 for p, v, l, s in ((px0, v0, l0, pw), (py0, v1, l1, ph), (px1, v2, l2, pw), (py1, v3, l3, ph))]
    return b.tmp("Concat", parts, node, "decoded", axis=-1)


@converter("DetectionOutput")
def _detection_output(b: Builder, node: Node) -> None:
    a = node.attrs
    classes = a["num_classes"]
    share = a["share_location"]
    loc_classes = 1 if share else classes
    priors = b.shape(node.inputs[2])[2] // 4
    i64 = np.int64
    # the number of priors follows the input size (PriorBox of a symbolic feature map): every count
    # below comes from the run-time shapes (0 copies the batch in a Reshape, -1 infers the priors)
    dynamic = any(b.varies(v) for v in node.inputs)
    count = -1 if dynamic else priors
    # priors and variances (P, 4)
    prior = b.tmp("Reshape", [b.inp(node, 2), b.shape_const(node, "prior_shape", [2, count, 4])], node, "priors")
    pbox = b.tmp("Gather", [prior, _scalar(b, node, "zero", 0, i64)], node, "prior_box", axis=0)
    pvar = b.tmp("Gather", [prior, _scalar(b, node, "one", 1, i64)], node, "prior_var", axis=0)
    # locations (N, P, L, 4) -> (N, L, P, 4) -> decoded (N, L*P, 4)
    loc_shape = [0, -1, loc_classes, 4] if dynamic else [-1, priors, loc_classes, 4]
    loc = b.tmp("Reshape", [b.inp(node, 0), b.shape_const(node, "loc_shape", loc_shape)], node, "loc")
    loc = b.tmp("Transpose", [loc], node, "loc_by_class", perm=[0, 2, 1, 3])
    boxes = _decode(b, node, loc, pbox, pvar)
    boxes_shape = [0, -1, 4] if dynamic else [-1, loc_classes * priors, 4]
    boxes = b.tmp("Reshape", [boxes, b.shape_const(node, "boxes_shape", boxes_shape)], node, "boxes")
    # scores (N, C, P), masked: background, outside each class's top_k
    conf_shape = [0, -1, classes] if dynamic else [-1, priors, classes]
    conf = b.tmp("Reshape", [b.inp(node, 1), b.shape_const(node, "conf_shape", conf_shape)], node, "conf")
    scores = b.tmp("Transpose", [conf], node, "scores", perm=[0, 2, 1])
    neg_inf = b.const(node, "neg_inf", np.array(-np.inf, dtype=f32))
    masked = scores
    k = min(a["top_k"], priors) if a["top_k"] > -1 else priors
    if k < priors or (dynamic and a["top_k"] > -1):
        if dynamic:  # min(top_k, P) at run time
            n_priors = b.tmp("Slice", [b.tmp("Shape", [scores], node, "scores_shape"), b.shape_const(node, "p_from", [2]),
                                       b.shape_const(node, "p_to", [3])], node, "n_priors")
            k_at = b.tmp("Min", [n_priors, b.shape_const(node, "top_k", [a["top_k"]])], node, "k")
            _, top = _topk(b, node, scores, k_at)
        else:
            _, top = _topk(b, node, scores, k)
        zeros = b.tmp("Mul", [scores, b.const(node, "f_zero", np.array(0, dtype=f32))], node, "zeros")
        ones = b.tmp("Expand", [b.const(node, "f_one", np.array(1, dtype=f32)),
                                b.tmp("Shape", [top], node, "top_shape")], node, "ones")
        hit = b.tmp("ScatterElements", [zeros, top, ones], node, "in_top_k", axis=2)
        keep = b.tmp("Cast", [hit], node, "in_top_k_bool", to=TensorProto.BOOL)
        masked = b.tmp("Where", [keep, masked, neg_inf], node, "top_k_scores")
    valid = np.ones((1, classes, 1), dtype=bool)
    if 0 <= a["background_label_id"] < classes:
        valid[0, a["background_label_id"]] = False
    masked = b.tmp("Where", [b.const(node, "not_background", valid), masked, neg_inf], node, "class_scores")
    if not share:  # one block of P boxes per class: class c scores only its own block (P read: not dynamic)
        masked = b.tmp("Tile", [masked, b.shape_const(node, "tile", [1, 1, classes])], node, "tiled")
        block = np.kron(np.eye(classes, dtype=bool), np.ones((1, priors), dtype=bool))[None]
        masked = b.tmp("Where", [b.const(node, "own_block", block), masked, neg_inf], node, "block_scores")
    if a["eta"] < 1:  # adaptive threshold: Caffe's greedy loop as an ONNX Loop (P read: not dynamic)
        selected = adaptive_nms(b, node, boxes, masked, k)
    else:
        if dynamic:  # every box of a class may be kept: the run-time box count
            most = b.tmp("Slice", [b.tmp("Shape", [boxes], node, "boxes_dims"), b.shape_const(node, "b_from", [1]),
                                   b.shape_const(node, "b_to", [2])], node, "max_boxes")
        else:
            most = b.const(node, "max_boxes", np.array([loc_classes * priors], dtype=i64))
        selected = b.tmp("NonMaxSuppression", [
            boxes, masked, most, b.const(node, "iou", np.array([a["nms_threshold"]], dtype=f32)),
            b.const(node, "score_threshold", np.array([a["confidence_threshold"]], dtype=f32))], node, "selected",
            center_point_box=0)
    sel_scores = b.tmp("GatherND", [masked, selected], node, "selected_scores")
    image = b.tmp("Gather", [selected, b.const(node, "col0", np.array([0], dtype=i64))], node, "image", axis=1)
    label = b.tmp("Gather", [selected, b.const(node, "col1", np.array([1], dtype=i64))], node, "label", axis=1)
    index = b.tmp("Gather", [selected, b.const(node, "col2", np.array([2], dtype=i64))], node, "index", axis=1)
    sel_boxes = b.tmp("GatherND", [boxes, b.tmp("Concat", [image, index], node, "box_index", axis=1)], node,
                      "selected_boxes")
    rows = b.tmp("Concat", [b.tmp("Cast", [image], node, "image_f", to=TensorProto.FLOAT),
                            b.tmp("Cast", [label], node, "label_f", to=TensorProto.FLOAT),
                            b.tmp("Unsqueeze", [sel_scores, b.shape_const(node, "ax1", [1])], node, "score_col"),
                            sel_boxes], node, "rows", axis=1)
    if a["keep_top_k"] > -1:
        rows = _keep_top_k(b, node, rows, image, sel_scores, a["keep_top_k"])
    _with_placeholder(b, node, rows)


def _topk(b: Builder, node: Node, x: str, k: int | str) -> tuple[str, str]:
    """TopK along the last axis; ``k`` a number or a 1-D int64 tensor computed in the graph."""
    values, indices = b.fresh(f"{node.name}/top_values"), b.fresh(f"{node.name}/top_indices")
    k_in = k if isinstance(k, str) else b.shape_const(node, "k", [k])
    b.nodes.append(helper.make_node("TopK", [x, k_in], [values, indices], name=values,
                                    axis=-1, largest=1, sorted=1))
    return values, indices


def _keep_top_k(b: Builder, node: Node, rows: str, image: str, scores: str, keep: int) -> str:
    """Rows whose rank within their image -- by score, then by position (NMS order) -- is below ``keep``."""
    col = b.tmp("Unsqueeze", [scores, b.shape_const(node, "ax_s1", [1])], node, "s_col")   # (M, 1)
    row = b.tmp("Unsqueeze", [scores, b.shape_const(node, "ax_s0", [0])], node, "s_row")   # (1, M)
    img_row = b.tmp("Transpose", [image], node, "img_row", perm=[1, 0])                    # (1, M)
    same = b.tmp("Equal", [image, img_row], node, "same_image")                            # (M, M): [i, j]
    better = b.tmp("Greater", [row, col], node, "better")                                   # s_j > s_i
    tie = b.tmp("Equal", [row, col], node, "tie")
    count = b.tmp("Shape", [scores], node, "count")
    pos = b.tmp("Range", [_scalar(b, node, "r0", 0, np.int64),
                          b.tmp("Squeeze", [count, b.shape_const(node, "ax0", [0])], node, "count_s"),
                          _scalar(b, node, "r1", 1, np.int64)], node, "pos")
    earlier = b.tmp("Less", [b.tmp("Unsqueeze", [pos, b.shape_const(node, "ax_p0", [0])], node, "pos_row"),
                             b.tmp("Unsqueeze", [pos, b.shape_const(node, "ax_p1", [1])], node, "pos_col")],
                    node, "earlier")                                                        # j < i
    ahead = b.tmp("And", [same, b.tmp("Or", [better, b.tmp("And", [tie, earlier], node, "tie_earlier")],
                                      node, "ahead_any")], node, "ahead")
    rank = b.tmp("ReduceSum", [b.tmp("Cast", [ahead], node, "ahead_i", to=TensorProto.INT64),
                               b.shape_const(node, "ax_rank", [1])], node, "rank", keepdims=0)
    kept = b.tmp("Less", [rank, b.const(node, "keep_top_k", np.array(keep, dtype=np.int64))], node, "kept")
    return b.tmp("Compress", [rows, kept], node, "kept_rows", axis=0)


def _with_placeholder(b: Builder, node: Node, rows: str) -> None:
    """``rows`` as (1, 1, M, 7), or Caffe's one ``[i, -1, ..., -1]`` row per image when M is 0."""
    i64 = np.int64
    batch1 = b.tmp("Gather", [b.tmp("Shape", [b.inp(node, 0)], node, "loc_shape_dyn"),
                              b.shape_const(node, "b0", [0])], node, "batch1")          # (1,)
    batch = b.tmp("Squeeze", [batch1], node, "batch")                                     # scalar
    ids = b.tmp("Cast", [b.tmp("Range", [_scalar(b, node, "z", 0, i64), batch, _scalar(b, node, "o", 1, i64)],
                               node, "ids_i")], node, "ids", to=TensorProto.FLOAT)
    ids = b.tmp("Unsqueeze", [ids, b.shape_const(node, "ax_id", [1])], node, "id_col")
    minus = b.tmp("Expand", [b.const(node, "minus_one", np.full((1, 6), -1, dtype=f32)),
                             b.tmp("Concat", [batch1, b.shape_const(node, "six", [6])], node, "fake_shape", axis=0)],
                  node, "minus")
    fake = b.tmp("Concat", [ids, minus], node, "fake", axis=1)
    found = b.tmp("Gather", [b.tmp("Shape", [rows], node, "rows_shape"), b.shape_const(node, "r_0", [0])],
                  node, "found")                                                          # (1,)
    none = b.tmp("Cast", [b.tmp("Equal", [found, b.shape_const(node, "zero_rows", [0])], node, "none_b")],
                 node, "none", to=TensorProto.INT64)
    end = b.tmp("Add", [found, b.tmp("Mul", [none, batch1], node, "fake_rows")], node, "end")
    both = b.tmp("Concat", [rows, fake], node, "with_fake", axis=0)
    taken = b.tmp("Slice", [both, b.shape_const(node, "start", [0]), end, b.shape_const(node, "axis0", [0])],
                  node, "taken")
    b.add("Reshape", [taken, b.shape_const(node, "out_shape", [1, 1, -1, 7])], b.out(node), node.name)
