"""ONNX converters for the shape family (:mod:`caffe2x.layers.shape`): Reshape, Permute, Tile, Crop,
Slice. Where the batch axis is left alone it stays dynamic (``0`` in a Reshape shape copies it)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, batch_moved, converter


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@converter("Reshape")
def _reshape(b: Builder, node: Node) -> None:
    x, y = b.shape(node.inputs[0]), list(b.shape(node.outputs[0]))
    rule = node.attrs.get("caffe_rule")
    if rule and (batch_moved(b, node.inputs[0]) or b.varies(node.inputs[0])):
        # Caffe's rule on the input's run-time shape (a moved batch, or symbolic H/W): its axes before the rule, the rule's dims (0 copies
        # the input dim at the same index, as in ONNX; -1 is inferred), its axes after the replaced ones
        start, end = int(rule["axis"]), int(rule["axis"]) + int(rule["num_axes"])
        dims = b.tmp("Shape", [b.inp(node)], node, "in_shape")
        parts = [b.tmp("Slice", [dims, b.const(node, "head0", _ints([0])), b.const(node, "head1", _ints([start]))],
                       node, "head"),
                 b.const(node, "rule_dims", _ints([int(d) for d in rule["dims"]])),
                 b.tmp("Slice", [dims, b.const(node, "tail0", _ints([end])), b.const(node, "tail1", _ints([len(x)]))],
                       node, "tail")]
        b.add("Reshape", [b.inp(node), b.tmp("Concat", parts, node, "shape", axis=0)], b.out(node), node.name)
        return
    if x and y and x[0] == y[0]:
        y[0] = 0  # copy the (dynamic) batch dimension
    b.add("Reshape", [b.inp(node), b.const(node, "shape", _ints(y))], b.out(node), node.name)


@converter("Permute")
def _permute(b: Builder, node: Node) -> None:
    b.add("Transpose", [b.inp(node)], b.out(node), node.name, perm=[int(a) for a in node.attrs["order"]])


@converter("Tile")
def _tile(b: Builder, node: Node) -> None:
    reps = [1] * b.rank(node.inputs[0])
    reps[node.attrs["axis"]] = node.attrs["tiles"]
    b.add("Tile", [b.inp(node), b.const(node, "repeats", _ints(reps))], b.out(node), node.name)


@converter("Crop")
def _crop(b: Builder, node: Node) -> None:
    if b.varies(node.inputs[1]):
        from caffe2x.targets.onnx.dynamic import crop

        crop(b, node)
        return
    axis, offsets = node.attrs["axis"], node.attrs["offsets"]
    out = b.shape(node.outputs[0])
    axes = list(range(axis, len(out)))
    starts = [offsets[i] for i in axes]
    ends = [offsets[i] + out[i] for i in axes]
    b.add("Slice", [b.inp(node), b.const(node, "starts", _ints(starts)), b.const(node, "ends", _ints(ends)),
                    b.const(node, "axes", _ints(axes))], b.out(node), node.name)


@converter("Slice")
def _slice(b: Builder, node: Node) -> None:
    points = node.attrs["points"]
    sizes = b.const(node, "split", _ints([q - p for p, q in zip(points, points[1:])]))
    outputs = [b.out(node, i) for i in range(len(node.outputs))]
    b.nodes.append(helper.make_node("Split", [b.inp(node), sizes], outputs, name=node.name, axis=node.attrs["axis"]))
