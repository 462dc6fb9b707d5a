"""Run-time forms of Interp and PriorBox in ONNX, for an input whose H or W is known only at run time
(symbolic input sizes, :mod:`.dynamic`): the sizes Caffe derives from its inputs are computed in the
graph from ``Shape`` instead of baked in as constants.

* Interp: the crop of ``pad_beg``/``pad_end`` is a ``Slice`` relative to both ends; the output size is
  Caffe's rule on the cropped size (``(e - 1) / shrink + 1``, ``e + (e - 1)(zoom - 1)``, both, the
  second input's H x W, or the given height/width, which stay constants); then each axis's source
  positions with Caffe's float32 arithmetic, ``r = float(src - 1) / float(dst - 1)``, ``pos = r * i``,
  truncated -- the same IEEE operations as :func:`caffe2x.graph.formulas.interp_axis`, so the weights
  are bit-identical -- and the static form's two ``Gather`` per axis and weighted sum.
* PriorBox (without img_size): the image size is the image input's H x W, the steps (unless given)
  image over feature size in float32, the centres ``(i + offset) * step`` from a ``Range`` over the
  feature map's H and W, then Caffe's box corners over image size, the clip, and the variances
  repeated once per box.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from caffe2x.graph.formulas import prior_box_sizes, prior_offsets
from caffe2x.graph.ir import Node

if TYPE_CHECKING:  # the converters in .resample and .detection call this module
    from caffe2x.targets.onnx.ops import Builder

i64, f32 = np.int64, np.float32
_FLOAT, _INT64 = TensorProto.FLOAT, TensorProto.INT64
#: Slice's "to the end" (ONNX clamps it to the axis' size)
_END = np.iinfo(np.int64).max


def _scalar(b: Builder, node: Node, what: str, value: int | float, dtype: type) -> str:
    """A 0-d ``Constant`` (``Builder.const`` makes at least 1-d tensors)."""
    out = b.fresh(f"{node.name}/{what}")
    b.nodes.append(helper.make_node("Constant", [], [out], name=out,
                                    value=numpy_helper.from_array(np.array(value, dtype=dtype), name=out)))
    return out


def _dim(b: Builder, node: Node, shape: str, axis: int, what: str) -> str:
    """Axis ``axis`` of the int64 shape tensor ``shape`` as a 0-d int64 tensor."""
    return b.tmp("Gather", [shape, _scalar(b, node, f"{what}_axis", axis, i64)], node, what, axis=0)


def interp_axis(b: Builder, node: Node, src: str, dst: str, tag: str) -> tuple[str, str, str, str]:
    """(index, next index, weight of index, weight of next) along one axis for 0-d int64 sizes
    ``src`` -> ``dst``: :func:`caffe2x.graph.formulas.interp_axis` in the graph."""
    one = _scalar(b, node, f"{tag}_one", 1, i64)
    src_less = b.tmp("Sub", [src, one], node, f"{tag}_src_less")
    dst_less = b.tmp("Max", [b.tmp("Sub", [dst, one], node, f"{tag}_dst_less"), one], node, f"{tag}_den")
    ratio = b.tmp("Div", [b.tmp("Cast", [src_less], node, f"{tag}_num_f", to=_FLOAT),
                          b.tmp("Cast", [dst_less], node, f"{tag}_den_f", to=_FLOAT)], node, f"{tag}_ratio")
    steps = b.tmp("Range", [_scalar(b, node, f"{tag}_zero", 0, i64), dst, one], node, f"{tag}_steps")
    pos = b.tmp("Mul", [ratio, b.tmp("Cast", [steps], node, f"{tag}_steps_f", to=_FLOAT)], node, f"{tag}_pos")
    i0 = b.tmp("Cast", [pos], node, f"{tag}_i0", to=_INT64)
    i1 = b.tmp("Add", [i0, b.tmp("Cast", [b.tmp("Less", [i0, src_less], node, f"{tag}_inside")], node,
                                 f"{tag}_next", to=_INT64)], node, f"{tag}_i1")
    lam1 = b.tmp("Sub", [pos, b.tmp("Cast", [i0], node, f"{tag}_i0_f", to=_FLOAT)], node, f"{tag}_lam1")
    lam0 = b.tmp("Sub", [_scalar(b, node, f"{tag}_one_f", 1.0, f32), lam1], node, f"{tag}_lam0")
    return i0, i1, lam0, lam1


def interp_size(b: Builder, node: Node, eff: str) -> str:
    """Interp's output H, W (a 1-D int64 pair) from the cropped input's ``eff`` by Caffe's rule."""
    rule = node.attrs["rule"]
    shrink, zoom = rule["shrink"], rule["zoom"]

    def const(what: str, v: int) -> str:
        return b.const(node, what, np.array([v, v], dtype=i64))

    def shrunk(e: str) -> str:
        less = b.tmp("Sub", [e, const("one_s", 1)], node, "shrink_less")
        return b.tmp("Add", [b.tmp("Div", [less, const("shrink", shrink)], node, "shrink_div"), const("one_t", 1)],
                     node, "shrunk")

    def zoomed(e: str) -> str:
        less = b.tmp("Sub", [e, const("one_z", 1)], node, "zoom_less")
        return b.tmp("Add", [e, b.tmp("Mul", [less, const("zoom", zoom - 1)], node, "zoom_mul")], node, "zoomed")

    if shrink is not None and zoom is None:
        return shrunk(eff)
    if zoom is not None and shrink is None:
        return zoomed(eff)
    if rule["height"] is not None and rule["width"] is not None:
        return b.const(node, "size", np.array([rule["height"], rule["width"]], dtype=i64))
    if shrink is not None and zoom is not None:
        return zoomed(shrunk(eff))
    like = b.tmp("Shape", [b.inp(node, 1)], node, "like_shape")
    return b.tmp("Slice", [like, b.shape_const(node, "like_from", [2]), b.shape_const(node, "like_to", [4])], node,
                 "like_size")


def interp_geometry(b: Builder, node: Node, x: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(the cropped input, (h0, h1, a0, a1), (w0, w1, b0, b1)) for Interp at run-time sizes."""
    rule = node.attrs["rule"]
    beg, end = rule["pad_beg"], rule["pad_end"]
    if beg or end:
        stop = end if end < 0 else _END
        x = b.tmp("Slice", [x, b.shape_const(node, "crop_start", [-beg, -beg]), b.shape_const(node, "crop_end", [stop, stop]),
                            b.shape_const(node, "crop_axes", [2, 3])], node, "crop")
    shape = b.tmp("Shape", [x], node, "region_shape")
    eff = b.tmp("Slice", [shape, b.shape_const(node, "hw_from", [2]), b.shape_const(node, "hw_to", [4])], node, "region")
    size = interp_size(b, node, eff)
    rows = interp_axis(b, node, _dim(b, node, shape, 2, "src_h"), _dim(b, node, size, 0, "dst_h"), "h")
    cols = interp_axis(b, node, _dim(b, node, shape, 3, "src_w"), _dim(b, node, size, 1, "dst_w"), "w")
    column = b.shape_const(node, "column_axis", [1])
    h0, h1, a0, a1 = rows
    a0 = b.tmp("Unsqueeze", [a0, column], node, "a0_col")
    a1 = b.tmp("Unsqueeze", [a1, column], node, "a1_col")
    return x, (h0, h1, a0, a1), cols


def prior_box(b: Builder, node: Node) -> None:
    """PriorBox whose image size follows the image input (no img_size), at run-time sizes."""
    a = node.attrs
    feature = b.tmp("Shape", [b.inp(node, 0)], node, "feature_shape")
    image = b.tmp("Shape", [b.inp(node, 1)], node, "image_shape")
    h, w = _dim(b, node, feature, 2, "h"), _dim(b, node, feature, 3, "w")
    img_h = b.tmp("Cast", [_dim(b, node, image, 2, "img_h_i")], node, "img_h", to=_FLOAT)
    img_w = b.tmp("Cast", [_dim(b, node, image, 3, "img_w_i")], node, "img_w", to=_FLOAT)
    if a["rule"]["step"] == "derived":  # Caffe: float(img) / feature size
        step_h = b.tmp("Div", [img_h, b.tmp("Cast", [h], node, "h_f", to=_FLOAT)], node, "step_h")
        step_w = b.tmp("Div", [img_w, b.tmp("Cast", [w], node, "w_f", to=_FLOAT)], node, "step_w")
    else:
        step_h = _scalar(b, node, "step_h", a["step"][0], f32)
        step_w = _scalar(b, node, "step_w", a["step"][1], f32)
    offs = np.array(prior_offsets(a), dtype=f32)     # (J, 2)
    sizes = np.array(prior_box_sizes(a), dtype=f32)  # (P, 2)
    zero, one = _scalar(b, node, "zero", 0, i64), _scalar(b, node, "one", 1, i64)

    def centres(n: str, offsets: np.ndarray, step: str, tag: str) -> str:
        cells = b.tmp("Cast", [b.tmp("Range", [zero, n, one], node, f"{tag}_cells")], node, f"{tag}_cells_f", to=_FLOAT)
        cells = b.tmp("Unsqueeze", [cells, b.shape_const(node, f"{tag}_col", [1])], node, f"{tag}_cells_col")
        shifted = b.tmp("Add", [cells, b.const(node, f"{tag}_offsets", offsets[None, :])], node, f"{tag}_shifted")
        return b.tmp("Mul", [shifted, step], node, f"{tag}_centres")  # (n, J)

    cx = b.tmp("Unsqueeze", [centres(w, offs[:, 1], step_w, "x"), b.shape_const(node, "x_axes", [0, 2])], node,
               "cx")  # (1, W, 1, J)
    cy = b.tmp("Unsqueeze", [centres(h, offs[:, 0], step_h, "y"), b.shape_const(node, "y_axes", [1, 2])], node,
               "cy")  # (H, 1, 1, J)
    half_w = b.const(node, "half_w", (sizes[:, 0] / f32(2)).reshape(1, 1, -1, 1))
    half_h = b.const(node, "half_h", (sizes[:, 1] / f32(2)).reshape(1, 1, -1, 1))
    grid = b.tmp("Concat", [b.tmp("Unsqueeze", [h, b.shape_const(node, "h_1d", [0])], node, "h_1d"),
                            b.tmp("Unsqueeze", [w, b.shape_const(node, "w_1d", [0])], node, "w_1d"),
                            b.shape_const(node, "pj", [len(sizes), len(offs)])], node, "grid", axis=0)
    corners = []
    for what, centre, half, op, size in (("xmin", cx, half_w, "Sub", img_w), ("ymin", cy, half_h, "Sub", img_h),
                                         ("xmax", cx, half_w, "Add", img_w), ("ymax", cy, half_h, "Add", img_h)):
        v = b.tmp("Div", [b.tmp(op, [centre, half], node, f"{what}_px"), size], node, what)
        v = b.tmp("Expand", [v, grid], node, f"{what}_grid")
        corners.append(b.tmp("Unsqueeze", [v, b.shape_const(node, f"{what}_last", [4])], node, f"{what}_col"))
    boxes = b.tmp("Reshape", [b.tmp("Concat", corners, node, "boxes_grid", axis=4), b.shape_const(node, "row", [1, 1, -1])],
                  node, "boxes")
    if a["clip"]:
        boxes = b.tmp("Clip", [boxes, _scalar(b, node, "lo", 0.0, f32), _scalar(b, node, "hi", 1.0, f32)], node, "clipped")
    var = np.asarray(a["variance"], dtype=f32)
    var = (var if var.size == 4 else np.repeat(var, 4)).reshape(1, 1, 1, 1, 4)
    grid5 = b.tmp("Concat", [grid, b.shape_const(node, "four", [4])], node, "grid5", axis=0)
    variances = b.tmp("Reshape", [b.tmp("Expand", [b.const(node, "variance", var), grid5], node, "var_grid"),
                                  b.shape_const(node, "var_row", [1, 1, -1])], node, "variances")
    b.add("Concat", [boxes, variances], b.out(node), node.name, axis=1)
