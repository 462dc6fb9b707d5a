"""ONNX converters for the element-wise layer family (:mod:`caffe2x.layers.elementwise`), standard
opset-17 operators only."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from caffe2x.graph.formulas import power_constant
from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


def _scalar(b: Builder, node: Node, what: str, value: float) -> str:
    return b.const(node, what, np.array(value, dtype=np.float32))


def _affine(b: Builder, node: Node, x: str, scale: float, shift: float) -> str:
    """``x * scale + shift`` with the no-op steps left out (Caffe skips them too)."""
    if scale != 1:
        x = b.tmp("Mul", [x, _scalar(b, node, "scale", scale)], node, "scaled")
    if shift != 0:
        x = b.tmp("Add", [x, _scalar(b, node, "shift", shift)], node, "shifted")
    return x


def _finish(b: Builder, node: Node, op_type: str, inputs: list[str]) -> None:
    b.add(op_type, inputs, b.out(node), node.name)


@converter("Power")
def _power(b: Builder, node: Node) -> None:
    a = node.attrs
    const = power_constant(a)
    if const is not None:  # Caffe writes the constant without reading the input
        shape = b.tmp("Shape", [b.inp(node)], node, "shape")
        b.add("ConstantOfShape", [shape], b.out(node), node.name,
              value=helper.make_tensor("value", TensorProto.FLOAT, [1], [const]))
        return
    y = _affine(b, node, b.inp(node), a["scale"], a["shift"])
    if a["power"] == 1:
        _finish(b, node, "Identity", [y])
    else:
        _finish(b, node, "Pow", [y, _scalar(b, node, "power", a["power"])])


@converter("AbsVal")
def _absval(b: Builder, node: Node) -> None:
    _finish(b, node, "Abs", [b.inp(node)])


@converter("BNLL")
def _bnll(b: Builder, node: Node) -> None:
    _finish(b, node, "Softplus", [b.inp(node)])


@converter("Exp")
def _exp(b: Builder, node: Node) -> None:
    a = node.attrs
    x = _affine(b, node, b.inp(node), a["inner_scale"], 0.0)
    if a["outer_scale"] == 1:
        _finish(b, node, "Exp", [x])
    else:
        _finish(b, node, "Mul", [b.tmp("Exp", [x], node, "exp"), _scalar(b, node, "outer_scale", a["outer_scale"])])


@converter("Log")
def _log(b: Builder, node: Node) -> None:
    a = node.attrs
    x = _affine(b, node, b.inp(node), a["scale"], a["shift"])
    if a["base_scale"] == 1:
        _finish(b, node, "Log", [x])
    else:
        _finish(b, node, "Mul", [b.tmp("Log", [x], node, "log"), _scalar(b, node, "base_scale", a["base_scale"])])


@converter("Threshold")
def _threshold(b: Builder, node: Node) -> None:
    above = b.tmp("Greater", [b.inp(node), _scalar(b, node, "threshold", node.attrs["threshold"])], node, "above")
    b.add("Cast", [above], b.out(node), node.name, to=TensorProto.FLOAT)


@converter("Clip")
def _clip(b: Builder, node: Node) -> None:
    _finish(b, node, "Clip", [b.inp(node), _scalar(b, node, "min", node.attrs["min"]),
                              _scalar(b, node, "max", node.attrs["max"])])


@converter("Swish")
def _swish(b: Builder, node: Node) -> None:
    x = b.inp(node)
    gate = b.tmp("Sigmoid", [_affine(b, node, x, node.attrs["beta"], 0.0)], node, "gate")
    _finish(b, node, "Mul", [x, gate])
