"""Keras builders for the element-wise layer family (:mod:`caffe2x.layers.elementwise`). Layout does not
matter here. BNLL is ``Activation('softplus')`` and Swish with beta 1 ``Activation('silu')``; the
rest is :class:`CaffeNeuron`, one registered layer evaluating Caffe's formula for its ``kind``."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.formulas import power_constant
from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeNeuron(keras.layers.Layer):
    """A Caffe element-wise layer: ``kind`` is power, absval, exp, log, threshold, clip or swish and
    ``params`` the constants of :mod:`caffe2x.layers.elementwise` (power: power, scale, shift,
    constant; exp: inner_scale, outer_scale; log: scale, shift, base_scale; threshold; clip: min, max;
    swish: beta)."""

    KINDS = ("power", "absval", "exp", "log", "threshold", "clip", "swish")

    def __init__(self, kind: str, params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in self.KINDS:
            raise ValueError(f"CaffeNeuron kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.params = dict(params or {})

    def call(self, x: Any) -> Any:
        p, kind = self.params, self.kind
        if kind == "power":
            if p.get("constant") is not None:
                return ops.full_like(x, p["constant"])
            y = x * p["scale"] if p["scale"] != 1 else x
            y = y + p["shift"] if p["shift"] != 0 else y
            return ops.power(y, p["power"]) if p["power"] != 1 else y
        if kind == "absval":
            return ops.abs(x)
        if kind == "exp":
            y = ops.exp(x * p["inner_scale"] if p["inner_scale"] != 1 else x)
            return y * p["outer_scale"] if p["outer_scale"] != 1 else y
        if kind == "log":
            y = x * p["scale"] if p["scale"] != 1 else x
            y = ops.log(y + p["shift"] if p["shift"] != 0 else y)
            return y * p["base_scale"] if p["base_scale"] != 1 else y
        if kind == "threshold":
            return ops.cast(ops.greater(x, p["threshold"]), x.dtype)
        if kind == "clip":
            return ops.maximum(p["min"], ops.minimum(x, p["max"]))
        return x * ops.sigmoid(x * p["beta"])  # swish

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "params": dict(self.params)}


def _neuron(ctx: BuildContext, node: Node, x: Any, kind: str, params: dict[str, Any]) -> list[Any]:
    return [CaffeNeuron(kind, params, name=ctx.name(node))(x)]


@builder("Power")
def _power(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    return _neuron(ctx, node, ins[0], "power", {"power": float(a["power"]), "scale": float(a["scale"]),
                                                 "shift": float(a["shift"]), "constant": power_constant(a)})


@builder("AbsVal")
def _absval(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return _neuron(ctx, node, ins[0], "absval", {})


@builder("BNLL")
def _bnll(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return [keras.layers.Activation("softplus", name=ctx.name(node))(ins[0])]


@builder("Exp")
def _exp(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    return _neuron(ctx, node, ins[0], "exp", {"inner_scale": float(a["inner_scale"]), "outer_scale": float(a["outer_scale"])})


@builder("Log")
def _log(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    return _neuron(ctx, node, ins[0], "log", {"scale": float(a["scale"]), "shift": float(a["shift"]),
                                               "base_scale": float(a["base_scale"])})


@builder("Threshold")
def _threshold(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return _neuron(ctx, node, ins[0], "threshold", {"threshold": float(node.attrs["threshold"])})


@builder("Clip")
def _clip(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return _neuron(ctx, node, ins[0], "clip", {"min": float(node.attrs["min"]), "max": float(node.attrs["max"])})


@builder("Swish")
def _swish(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    beta = float(node.attrs["beta"])
    if beta == 1.0:
        return [keras.layers.Activation("silu", name=ctx.name(node))(ins[0])]
    return _neuron(ctx, node, ins[0], "swish", {"beta": beta})
