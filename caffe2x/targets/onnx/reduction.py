"""ONNX converters for the reduction family (:mod:`caffe2x.layers.reduction`): Reduction, ArgMax.

ONNX's TopK breaks ties by the smaller index, Caffe's ArgMax by the larger: ArgMax runs TopK on the
reversed axis and maps the indices back."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@converter("Reduction")
def _reduction(b: Builder, node: Node) -> None:
    """Flatten the reduced axes into one (``0`` keeps the leading ones), transform, sum, scale."""
    a = node.attrs
    axis = a["axis"]
    flat = b.tmp("Reshape", [b.inp(node), b.const(node, "flat_shape", _ints([0] * axis + [-1]))], node, "flat")
    if a["operation"] == "asum":
        flat = b.tmp("Abs", [flat], node, "abs")
    elif a["operation"] == "sumsq":
        flat = b.tmp("Mul", [flat, flat], node, "square")
    if a["operation"] == "mean":  # a mean, not sum / count: count includes the batch when axis is 0
        total = b.tmp("ReduceMean", [flat], node, "mean", axes=[-1], keepdims=0)
    else:
        total = b.tmp("ReduceSum", [flat, b.const(node, "axes", _ints([-1]))], node, "sum", keepdims=0)
    coeff = a["coeff"]
    if coeff != 1:  # (the constant is 1-D: Builder.const stores arrays at least 1-D)
        total = b.tmp("Mul", [total, b.const(node, "coeff", np.array([coeff], dtype=np.float32))], node, "scaled")
    if axis == 0:  # a 0-d blob: drop the 1-D shape the coefficient broadcast gave it
        b.add("Reshape", [total, b.const(node, "scalar", _ints([]))], b.out(node), node.name)
    else:
        b.add("Identity", [total], b.out(node), node.name)


def _const(b: Builder, node: Node, what: str, values: list[int]) -> str:
    return b.const(node, what, _ints(values))


@converter("ArgMax")
def _argmax(b: Builder, node: Node) -> None:
    a = node.attrs
    k = b.const(node, "k", _ints([a["top_k"]]))
    x = b.inp(node)
    axis = a["axis"]
    if axis is None:
        x = b.tmp("Reshape", [x, b.const(node, "flat_shape", _ints([0, -1]))], node, "flat")
    # TopK keeps the lower index of equal values, Caffe the larger: run it on the reversed axis
    along = 1 if axis is None else axis
    # the axis' run-time length (axis 0 is the dynamic batch)
    size = b.tmp("Gather", [b.tmp("Shape", [x], node, "x_shape"), _const(b, node, "along", [along])], node, "size")
    x = b.tmp("Slice", [x, _const(b, node, "rev_start", [-1]), _const(b, node, "rev_end", [np.iinfo(np.int64).min]),
                        _const(b, node, "rev_axis", [along]), _const(b, node, "rev_step", [-1])], node, "reversed")
    values, flipped = b.fresh(f"{node.name}/values"), b.fresh(f"{node.name}/flipped")
    b.nodes.append(helper.make_node("TopK", [x, k], [values, flipped], name=f"{node.name}/topk",
                                    axis=along, largest=1, sorted=1))
    last = b.tmp("Sub", [size, _const(b, node, "one", [1])], node, "last")
    indices = b.tmp("Sub", [last, flipped], node, "indices")
    index = b.tmp("Cast", [indices], node, "index", to=TensorProto.FLOAT)
    if axis is not None:
        b.add("Identity", [values if a["out_max_val"] else index], b.out(node), node.name)
        return
    one = b.const(node, "axis1", _ints([1]))
    parts = [b.tmp("Unsqueeze", [index, one], node, "index_row")]
    if a["out_max_val"]:
        parts.append(b.tmp("Unsqueeze", [values, one], node, "value_row"))
    stacked = b.tmp("Concat", parts, node, "stacked", axis=1) if len(parts) == 2 else parts[0]
    out = list(b.shape(node.outputs[0]))
    out[0] = 0
    b.add("Reshape", [stacked, b.const(node, "out_shape", _ints(out))], b.out(node), node.name)
