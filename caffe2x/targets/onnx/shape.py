"""ONNX converters for the shape family (:mod:`caffe2x.layers.shape`): Reshape, Permute, Tile, Crop,
Slice. Where the batch axis is left alone it stays dynamic (``0`` in a Reshape shape copies it)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ...ir import Node
from .ops import Builder, converter


def _ints(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@converter("Reshape")
def _reshape(b: Builder, node: Node) -> None:
    x, y = b.shape(node.inputs[0]), list(b.shape(node.outputs[0]))
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
