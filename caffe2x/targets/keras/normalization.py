"""Keras builders for the normalization family (:mod:`caffe2x.layers.normalization`): MeanVarNorm (MVN,
BatchNorm with batch statistics; its Caffe axes mapped to the Keras layout) and the fork BN layer
(channels last for a 4-D input; its (1, C, 1, 1) blobs become (C,) weights)."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder, keras_axis, set_weights


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeMeanVarNorm(keras.layers.Layer):
    """Subtract the mean over ``axes`` (Keras axes); with ``normalize_variance`` divide by ``std + eps``
    (MVN) or ``sqrt(var + eps)`` (``eps_in_sqrt``), biased variance."""

    def __init__(self, axes: Any, eps: float, eps_in_sqrt: bool, normalize_variance: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]
        self.eps, self.eps_in_sqrt, self.normalize_variance = float(eps), bool(eps_in_sqrt), bool(normalize_variance)

    def call(self, x: Any) -> Any:
        axes = tuple(self.axes)
        centred = x - ops.mean(x, axis=axes, keepdims=True)
        if not self.normalize_variance:
            return centred
        var = ops.mean(centred * centred, axis=axes, keepdims=True)
        return centred / (ops.sqrt(var + self.eps) if self.eps_in_sqrt else ops.sqrt(var) + self.eps)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axes": self.axes, "eps": self.eps, "eps_in_sqrt": self.eps_in_sqrt,
                "normalize_variance": self.normalize_variance}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeBN(keras.layers.Layer):
    """The fork BN layer on NHWC input: ``affine``, ``batch`` (batch statistics over N, H, W first) or
    ``stored`` (``running_mean``/``running_var``), then ``* weight + bias`` per channel."""

    def __init__(self, channels: int, mode: str, eps: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels, self.mode, self.eps = int(channels), mode, float(eps)

    def build(self, input_shape: Any) -> None:
        c = (self.channels,)
        self.weight = self.add_weight(name="weight", shape=c, initializer="ones")
        self.bias = self.add_weight(name="bias", shape=c, initializer="zeros")
        if self.mode == "stored":
            self.running_mean = self.add_weight(name="running_mean", shape=c, initializer="zeros", trainable=False)
            self.running_var = self.add_weight(name="running_var", shape=c, initializer="ones", trainable=False)

    def call(self, x: Any) -> Any:
        if self.mode == "stored":
            x = (x - self.running_mean) / ops.sqrt(self.running_var + self.eps)
        elif self.mode == "batch":
            mean = ops.mean(x, axis=(0, 1, 2), keepdims=True)
            var = ops.mean(x * x, axis=(0, 1, 2), keepdims=True) - mean * mean
            x = (x - mean) / ops.sqrt(var + self.eps)
        return x * self.weight + self.bias

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "mode": self.mode, "eps": self.eps}


@builder("MeanVarNorm")
def _mvn(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    rank = ctx.rank(node.inputs[0])
    axes = sorted(keras_axis(int(i), rank) for i in a["axes"])
    return [CaffeMeanVarNorm(axes, a["eps"], a["eps_in_sqrt"], a["normalize_variance"], name=ctx.name(node))(ins[0])]


@builder("BN")
def _bn(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    values = {role: ctx.param(node, role).reshape(-1) for role in node.params}
    layer = CaffeBN(values["weight"].size, a["mode"], a["eps"], name=ctx.name(node))
    y = layer(ins[0])
    set_weights(layer, **values)
    return [y]
