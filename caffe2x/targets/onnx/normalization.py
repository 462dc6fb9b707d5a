"""ONNX converters for the normalization family (:mod:`caffe2x.layers.normalization`): MeanVarNorm
(MVN, BatchNorm with batch statistics) and the fork BN layer."""
from __future__ import annotations

import numpy as np

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


def _scalar(b: Builder, node: Node, what: str, value: float) -> str:
    return b.const(node, what, np.array(value, dtype=np.float32))


def _normalise(b: Builder, node: Node, x: str, axes: list[int], eps: float, eps_in_sqrt: bool) -> str:
    mean = b.tmp("ReduceMean", [x], node, "mean", axes=axes, keepdims=1)
    centred = b.tmp("Sub", [x, mean], node, "centred")
    var = b.tmp("ReduceMean", [b.tmp("Mul", [centred, centred], node, "square")], node, "var", axes=axes, keepdims=1)
    eps_c = _scalar(b, node, "eps", eps)
    if eps_in_sqrt:
        denom = b.tmp("Sqrt", [b.tmp("Add", [var, eps_c], node, "var_eps")], node, "std")
    else:
        denom = b.tmp("Add", [b.tmp("Sqrt", [var], node, "std"), eps_c], node, "std_eps")
    return b.tmp("Div", [centred, denom], node, "normalised")


@converter("MeanVarNorm")
def _mvn(b: Builder, node: Node) -> None:
    a = node.attrs
    axes = [int(i) for i in a["axes"]]
    if not a["normalize_variance"]:
        mean = b.tmp("ReduceMean", [b.inp(node)], node, "mean", axes=axes, keepdims=1)
        b.add("Sub", [b.inp(node), mean], b.out(node), node.name)
        return
    y = _normalise(b, node, b.inp(node), axes, a["eps"], a["eps_in_sqrt"])
    b.add("Identity", [y], b.out(node), node.name)


@converter("BN")
def _bn(b: Builder, node: Node) -> None:
    a = node.attrs
    x = b.inp(node)
    if a["mode"] == "stored":
        centred = b.tmp("Sub", [x, b.param(node, "running_mean")], node, "centred")
        var_eps = b.tmp("Add", [b.param(node, "running_var"), _scalar(b, node, "eps", a["eps"])], node, "var_eps")
        x = b.tmp("Div", [centred, b.tmp("Sqrt", [var_eps], node, "std")], node, "normalised")
    elif a["mode"] == "batch":
        x = _normalise(b, node, x, [0, 2, 3], a["eps"], True)
    scaled = b.tmp("Mul", [x, b.param(node, "weight")], node, "scaled")
    b.add("Add", [scaled, b.param(node, "bias")], b.out(node), node.name)
