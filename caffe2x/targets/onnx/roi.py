"""ROIPooling in ONNX opset 17: the standard ``MaxRoiPool`` is Fast R-CNN's layer (corners rounded,
``+ 1`` sizes, floor/ceil bins, empty bins 0; checked against the reference). PSROIPooling has no ONNX
operator: it is an integral image (float64 prefix sums) gathered at each bin's corners, the bins computed
with the fork's float32 arithmetic (formulas: :mod:`caffe2x.layers.roi`)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


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
    """Every region at once, from an integral image: the window sums are differences of the feature
    map's 2-D prefix sums, taken in float64 (a float32 value is exact in float64, and the cancellation
    error is ~1e-16 of the image's sum: far below float32's rounding), gathered from the flattened
    prefix sums at the corners of each bin; memory is two feature maps plus R x output_dim x g x g."""
    a = node.attrs
    n, c, h, w = b.shape(node.inputs[0])
    g, dim = int(a["group_size"]), int(a["output_dim"])
    f64, i64 = TensorProto.DOUBLE, TensorProto.INT64

    def col(t: str, lo: int, hi: int, what: str) -> str:
        return b.tmp("Slice", [t, b.shape_const(node, f"{what}_lo", [lo]), b.shape_const(node, f"{what}_hi", [hi]),
                               b.shape_const(node, f"{what}_ax", [1])], node, what)

    def f32(value: float, what: str) -> str:
        return b.const(node, what, np.array(value, dtype=np.float32))

    rois = b.tmp("Reshape", [b.inp(node, 1), b.shape_const(node, "rois_shape", [-1, 5])], node, "rois")
    batch = b.tmp("Cast", [col(rois, 0, 1, "batch_f")], node, "batch", to=i64)                          # (R, 1)
    coords = b.tmp("Cast", [col(rois, 1, 5, "coords")], node, "coords64", to=f64)
    half_up = b.tmp("Floor", [b.tmp("Add", [b.tmp("Abs", [coords], node, "abs"),
                                            b.const(node, "half", np.array(0.5))], node, "abs_half")], node, "floor")
    rounded = b.tmp("Cast", [b.tmp("Mul", [b.tmp("Sign", [coords], node, "sign"), half_up], node, "round64")], node,
                    "rounded", to=TensorProto.FLOAT)                    # C's round, as the reference (float64)
    scale = f32(a["spatial_scale"], "scale")
    start = b.tmp("Mul", [col(rounded, 0, 2, "corner1"), scale], node, "start")                      # x1, y1
    end = b.tmp("Mul", [b.tmp("Add", [col(rounded, 2, 4, "corner2"), f32(1.0, "one")], node, "corner2_1"), scale],
                node, "end")
    extent = b.tmp("Max", [b.tmp("Sub", [end, start], node, "extent_raw"), f32(0.1, "min_extent")], node, "extent")
    bin_size = b.tmp("Div", [extent, f32(float(g), "groups")], node, "bin_size")
    k = b.const(node, "k", np.arange(g, dtype=np.float32).reshape(1, g))
    k1 = b.const(node, "k1", np.arange(1, g + 1, dtype=np.float32).reshape(1, g))

    def bounds(i: int, size: int, what: str) -> tuple[str, str]:
        bin_i, start_i = col(bin_size, i, i + 1, f"bin_{what}"), col(start, i, i + 1, f"start_{what}")
        edges = []
        for edge, (ks, rnd) in (("lo", (k, "Floor")), ("hi", (k1, "Ceil"))):
            v = b.tmp(rnd, [b.tmp("Add", [b.tmp("Mul", [ks, bin_i], node, f"{what}_{edge}_mul"), start_i], node,
                                      f"{what}_{edge}_add")], node, f"{what}_{edge}_round")
            v = b.tmp("Clip", [v, f32(0.0, f"{what}_{edge}_min"), f32(float(size), f"{what}_{edge}_max")], node,
                      f"{what}_{edge}_clip")
            edges.append(b.tmp("Cast", [v], node, f"{what}_{edge}", to=i64))                      # (R, g)
        return edges[0], edges[1]

    (hs, he), (ws, we) = bounds(1, h, "rows"), bounds(0, w, "cols")

    def as_shape(t: str, shape: list[int], what: str) -> str:
        return b.tmp("Reshape", [t, b.shape_const(node, f"{what}_shape", shape)], node, what)

    rows = {"s": as_shape(hs, [-1, 1, g, 1], "hs4"), "e": as_shape(he, [-1, 1, g, 1], "he4")}
    cols = {"s": as_shape(ws, [-1, 1, 1, g], "ws4"), "e": as_shape(we, [-1, 1, 1, g], "we4")}
    # prefix sums with a zero row and column in front: S[.., y, x] = sum of x[.., :y, :x]
    x64 = b.tmp("Cast", [b.inp(node, 0)], node, "x64", to=f64)
    summed = b.tmp("CumSum", [b.tmp("CumSum", [x64, b.const(node, "ax2", np.array(2, dtype=np.int64))], node,
                                    "cum_h"), b.const(node, "ax3", np.array(3, dtype=np.int64))], node, "cum_hw")
    padded = b.tmp("Pad", [summed, b.shape_const(node, "pads", [0, 0, 1, 1, 0, 0, 0, 0])], node, "integral")
    flat = as_shape(padded, [-1], "integral_flat")
    channel = b.const(node, "channel", np.arange(c, dtype=np.int64).reshape(1, dim, g, g))  # (k * g + i) * g + j
    plane = b.tmp("Mul", [b.tmp("Add", [b.tmp("Mul", [as_shape(batch, [-1, 1, 1, 1], "batch4"),
                                                      b.shape_const(node, "c", [c])], node, "image"), channel], node,
                                "plane_index"), b.shape_const(node, "h1", [h + 1])], node, "plane")  # (R, K, g, g)

    def corner(y: str, x: str) -> str:
        index = b.tmp("Add", [b.tmp("Mul", [b.tmp("Add", [plane, rows[y]], node, f"row_{y}{x}"),
                                            b.shape_const(node, f"w1_{y}{x}", [w + 1])], node, f"row_off_{y}{x}"),
                              cols[x]], node, f"index_{y}{x}")
        return b.tmp("Gather", [flat, index], node, f"corner_{y}{x}", axis=0)

    window = b.tmp("Add", [b.tmp("Sub", [b.tmp("Sub", [corner("e", "e"), corner("s", "e")], node, "minus_top"),
                                         corner("e", "s")], node, "minus_left"), corner("s", "s")], node, "window")
    area = b.tmp("Mul", [b.tmp("Sub", [rows["e"], rows["s"]], node, "bin_h"),
                         b.tmp("Sub", [cols["e"], cols["s"]], node, "bin_w")], node, "area")         # (R, 1, g, g)
    area64 = b.tmp("Cast", [area], node, "area64", to=f64)
    mean = b.tmp("Div", [window, b.tmp("Max", [area64, b.const(node, "one64", np.array(1.0))], node, "area_pos")],
                 node, "mean64")
    empty = b.tmp("Equal", [area, b.const(node, "zero_i", np.array(0, dtype=np.int64))], node, "empty")
    mean = b.tmp("Where", [empty, b.const(node, "zero64", np.array(0.0)), mean], node, "mean_or_0")
    b.add("Cast", [mean], b.out(node), node.name, to=TensorProto.FLOAT)
