"""MAX Pooling with a mask top, Upsample (unpooling / nearest) and Interp in ONNX opset 17 (formulas:
:mod:`caffe2x.layers.resample`).

* PoolingWithMask: ``MaxPool`` with explicit (asymmetric) pads -- padding never wins, as Caffe's
  clipped windows -- and its ``Indices`` output (row-major over N, C, H, W of the unpadded input, first
  maximum on ties) taken modulo ``H * W``.
* Unpooling: several values may target one index when pooling windows overlap, and Caffe's loop
  keeps the last; ONNX's scatter leaves duplicates undefined. So each channel's (index, position)
  keys are sorted (TopK), only the last write per index is scattered, the others go to a spare slot
  that is cut off.
* UpsampleNearest: ``Resize`` nearest with integer scales (exact: asymmetric, floor).
* Interp: Caffe's source positions and weights depend only on the sizes; they are constants, and the
  output is two ``Gather`` per axis and Caffe's weighted sum. At sizes known only at run time they
  are computed in the graph with the same float32 operations (:mod:`.dynamic_layers`).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from caffe2x.graph.formulas import interp_axis
from caffe2x.graph.ir import Node
from caffe2x.graph.reference import pool_geometry
from caffe2x.targets.onnx.ops import Builder, converter

i64 = np.int64


@converter("PoolingWithMask")
def _pool_mask(b: Builder, node: Node) -> None:
    a = node.attrs
    _, _, h, w = b.shape(node.inputs[0])
    _, _, oh, ow = b.shape(node.outputs[0])
    if a["global_pooling"]:
        (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
    else:
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    rh, _ = pool_geometry(h, oh, kh, sh, ph)
    rw, _ = pool_geometry(w, ow, kw, sw, pw)
    values, indices = b.out(node, 0), b.fresh(f"{node.name}/indices")
    b.nodes.append(helper.make_node("MaxPool", [b.inp(node)], [values, indices], name=node.name,
                                    kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, rh, rw]))
    flat = b.tmp("Mod", [indices, b.const(node, "plane", np.array(h * w, dtype=i64))], node, "flat")
    b.add("Cast", [flat], b.out(node, 1), f"{node.name}/mask", to=TensorProto.FLOAT)


@converter("Unpooling")
def _unpool(b: Builder, node: Node) -> None:
    n, c, h, w = b.shape(node.inputs[0])
    oh, ow = node.attrs["size"]
    plane, count = oh * ow, h * w
    vals = b.tmp("Reshape", [b.inp(node, 0), b.shape_const(node, "rows", [-1, count])], node, "vals")
    idx = b.tmp("Cast", [b.tmp("Reshape", [b.inp(node, 1), b.shape_const(node, "rows_m", [-1, count])], node,
                               "mask_rows")], node, "idx", to=TensorProto.INT64)
    key = b.tmp("Add", [b.tmp("Mul", [idx, b.const(node, "count", np.array(count, dtype=i64))], node, "idx_scaled"),
                        b.const(node, "positions", np.arange(count, dtype=i64)[None])], node, "key")
    top, _ = b.fresh(f"{node.name}/sorted"), None
    order = b.fresh(f"{node.name}/order")
    b.nodes.append(helper.make_node("TopK", [key, b.shape_const(node, "k", [count])], [top, order], name=top,
                                    axis=1, largest=1, sorted=1))
    target = b.tmp("Div", [top, b.const(node, "count2", np.array(count, dtype=i64))], node, "target")
    source = b.tmp("Sub", [top, b.tmp("Mul", [target, b.const(node, "count3", np.array(count, dtype=i64))], node,
                                      "target_scaled")], node, "source")
    previous = b.tmp("Concat", [b.tmp("Slice", [target, b.shape_const(node, "s0", [0]), b.shape_const(node, "s1", [1]),
                                                b.shape_const(node, "sa", [1])], node, "first"),
                                b.tmp("Slice", [target, b.shape_const(node, "p0", [0]),
                                                b.shape_const(node, "p1", [count - 1]), b.shape_const(node, "pa", [1])],
                                      node, "shifted")], node, "previous", axis=1)
    first_col = np.zeros((1, count), dtype=bool)
    first_col[0, 0] = True
    winner = b.tmp("Or", [b.const(node, "first_col", first_col),
                          b.tmp("Not", [b.tmp("Equal", [target, previous], node, "dup")], node, "fresh")],
                   node, "winner")
    slot = b.tmp("Where", [winner, target, b.const(node, "spare", np.array(plane, dtype=i64))], node, "slot")
    moved = b.tmp("GatherElements", [vals, source], node, "moved", axis=1)
    rows = b.tmp("Gather", [b.tmp("Shape", [vals], node, "vals_shape"), b.const(node, "r0", np.array([0], dtype=i64))],
                 node, "nrows")
    zeros = b.tmp("ConstantOfShape", [b.tmp("Concat", [rows, b.shape_const(node, "width", [plane + 1])], node,
                                            "zero_shape", axis=0)], node, "zeros",
                  value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    scattered = b.tmp("ScatterElements", [zeros, slot, moved], node, "scattered", axis=1)
    cut = b.tmp("Slice", [scattered, b.shape_const(node, "c0", [0]), b.shape_const(node, "c1", [plane]),
                          b.shape_const(node, "ca", [1])], node, "cut")
    b.add("Reshape", [cut, b.shape_const(node, "out_shape", [-1, c, oh, ow])], b.out(node), node.name)


@converter("UpsampleNearest")
def _nearest(b: Builder, node: Node) -> None:
    sh, sw = node.attrs["scale"]
    scales = b.const(node, "scales", np.array([1, 1, sh, sw], dtype=np.float32))
    b.add("Resize", [b.inp(node), "", scales], b.out(node), node.name, mode="nearest",
          coordinate_transformation_mode="asymmetric", nearest_mode="floor")


@converter("Interp")
def _interp(b: Builder, node: Node) -> None:
    a = node.attrs
    x = b.inp(node)
    if "rule" in a and any(b.varies(v) for v in node.inputs):  # sizes known at run time: computed in the graph
        from caffe2x.targets.onnx.dynamic_layers import interp_geometry

        x, (h0, h1, a0, a1), (w0, w1, wb0, wb1) = interp_geometry(b, node, x)
    else:
        (t, l), (rh, rw) = a["crop"], a["region"]
        _, _, h, w = b.shape(node.inputs[0])
        if (t, l, rh, rw) != (0, 0, h, w):
            x = b.tmp("Slice", [x, b.shape_const(node, "crop_start", [t, l]),
                                b.shape_const(node, "crop_end", [t + rh, l + rw]),
                                b.shape_const(node, "crop_axes", [2, 3])], node, "crop")
        rows, cols = interp_axis(rh, a["size"][0]), interp_axis(rw, a["size"][1])
        h0, h1 = (b.const(node, f"row{i}_idx", v.astype(i64)) for i, v in enumerate(rows[:2]))
        a0, a1 = (b.const(node, f"h{i}w", v.reshape(-1, 1).astype(np.float32)) for i, v in enumerate(rows[2:]))
        w0, w1 = (b.const(node, f"col{i}_idx", v.astype(i64)) for i, v in enumerate(cols[:2]))
        wb0, wb1 = (b.const(node, f"w{i}", v.reshape(1, -1).astype(np.float32)) for i, v in enumerate(cols[2:]))

    def gather(t_: str, idx: str, axis: int, what: str) -> str:
        return b.tmp("Gather", [t_, idx], node, what, axis=axis)

    r0, r1 = gather(x, h0, 2, "row0"), gather(x, h1, 2, "row1")

    def blend(r: str, what: str) -> str:
        left = b.tmp("Mul", [wb0, gather(r, w0, 3, f"{what}_c0")], node, f"{what}_l")
        right = b.tmp("Mul", [wb1, gather(r, w1, 3, f"{what}_c1")], node, f"{what}_r")
        return b.tmp("Add", [left, right], node, what)

    top = b.tmp("Mul", [a0, blend(r0, "top")], node, "top_w")
    bottom = b.tmp("Mul", [a1, blend(r1, "bottom")], node, "bottom_w")
    b.add("Add", [top, bottom], b.out(node), node.name)
