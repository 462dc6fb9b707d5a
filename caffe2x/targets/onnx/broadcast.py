"""ONNX converters for the broadcast family (:mod:`caffe2x.layers.broadcast`): Bias, two-input Scale
(``Multiply``), Axpy. ONNX broadcasts from the right, so an operand covering axes ``axis..`` only needs
its trailing axes added (``Unsqueeze``), which keeps the batch dimension dynamic."""
from __future__ import annotations

import numpy as np

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


def _operand(b: Builder, node: Node, value: str, operand_rank: int, x_rank: int, axis: int) -> str:
    trailing = x_rank - axis - operand_rank
    if trailing <= 0:
        return value
    axes = b.const(node, "trailing_axes", np.arange(operand_rank, operand_rank + trailing, dtype=np.int64))
    return b.tmp("Unsqueeze", [value, axes], node, "operand")


def _param(b: Builder, node: Node, role: str, x_rank: int, axis: int) -> str:
    shape = b.graph.tensors[node.params[role]].shape
    return b.param_reshaped(node, role, tuple(shape) + (1,) * (x_rank - axis - len(shape)))


@converter("Bias")
def _bias(b: Builder, node: Node) -> None:
    x_rank, axis = b.rank(node.inputs[0]), node.attrs["axis"]
    if len(node.inputs) == 2:
        operand = _operand(b, node, b.inp(node, 1), b.rank(node.inputs[1]), x_rank, axis)
    elif node.attrs.get("scalar"):
        operand = b.param(node, "bias")  # shape (1,): broadcasts everywhere
    else:
        operand = _param(b, node, "bias", x_rank, axis)
    b.add("Add", [b.inp(node), operand], b.out(node), node.name)


@converter("Multiply")
def _multiply(b: Builder, node: Node) -> None:
    x_rank, axis = b.rank(node.inputs[0]), node.attrs["axis"]
    s = _operand(b, node, b.inp(node, 1), b.rank(node.inputs[1]), x_rank, axis)
    if "bias" not in node.params:
        b.add("Mul", [b.inp(node), s], b.out(node), node.name)
        return
    scaled = b.tmp("Mul", [b.inp(node), s], node, "scaled")
    b.add("Add", [scaled, _param(b, node, "bias", x_rank, axis)], b.out(node), node.name)


@converter("Axpy")
def _axpy(b: Builder, node: Node) -> None:
    a = _operand(b, node, b.inp(node, 0), 2, b.rank(node.inputs[1]), 0) if b.rank(node.inputs[0]) == 2 \
        else b.inp(node, 0)
    ax = b.tmp("Mul", [a, b.inp(node, 1)], node, "ax")
    b.add("Add", [ax, b.inp(node, 2)], b.out(node), node.name)
