"""Keras builders for the broadcast family (:mod:`caffe2x.layers.broadcast`): Bias, two-input Scale
(``Multiply``), Axpy.

Caffe's operand covers the input's axes ``axis..`` in NCHW order. A learned operand is laid out once,
at conversion: padded with 1s to the input's rank, permuted to NHWC for a 4-D input, stripped of its
leading 1s (a per-channel bias becomes ``(C,)``). An operand that is a second input is laid out at run
time by :class:`CaffeBroadcast`: back to NCHW if it is a 4-D (NHWC) tensor, reshaped to its Caffe
broadcast shape (the batch axis left dynamic when ``axis`` is 0), permuted to NHWC for a 4-D input.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder, set_weights


def param_layout(p: np.ndarray, axis: int, rank: int, layer: str) -> np.ndarray:
    """A Caffe operand of a rank-``rank`` input laid out to broadcast against its Keras tensor
    (without the batch axis)."""
    full = p.reshape((1,) * axis + p.shape + (1,) * (rank - axis - p.ndim))
    if rank == 4:
        full = full.transpose(0, 2, 3, 1)
    if full.shape[0] != 1:
        raise Caffe2xError(f"layer {layer!r}: a learned operand over the batch axis cannot be a Keras weight")
    full = full[0]
    while full.ndim > 1 and full.shape[0] == 1:
        full = full[0]
    return full


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeBroadcast(keras.layers.Layer):
    """``x + s`` (``operation`` 'add') or ``x * s (+ bias)`` ('mul') with Caffe's broadcasting of a second
    input ``s``: ``shape`` is s's Caffe broadcast shape (-1 for a batch axis), ``operand_nhwc`` says s
    arrives NHWC (4-D), ``nhwc`` that x is NHWC (4-D). ``bias_shape``: a learned bias laid out for x."""

    def __init__(self, operation: str, shape: Any, operand_nhwc: bool = False, nhwc: bool = False,
                 bias_shape: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if operation not in ("add", "mul"):
            raise ValueError(f"CaffeBroadcast operation must be 'add' or 'mul', got {operation!r}")
        self.operation, self.shape = operation, tuple(int(d) for d in shape)
        self.operand_nhwc, self.nhwc = bool(operand_nhwc), bool(nhwc)
        self.bias_shape = None if bias_shape is None else tuple(int(d) for d in bias_shape)

    def build(self, input_shape: Any) -> None:
        self.bias = (self.add_weight(name="bias", shape=self.bias_shape, initializer="zeros")
                     if self.bias_shape is not None else None)

    def call(self, inputs: list[Any]) -> Any:
        x, s = inputs
        if self.operand_nhwc:
            s = ops.transpose(s, (0, 3, 1, 2))
        s = ops.reshape(s, self.shape)
        if self.nhwc:
            s = ops.transpose(s, (0, 2, 3, 1))
        if self.operation == "add":
            return x + s
        y = x * s
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[0])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "operation": self.operation, "shape": list(self.shape),
                "operand_nhwc": self.operand_nhwc, "nhwc": self.nhwc,
                "bias_shape": None if self.bias_shape is None else list(self.bias_shape)}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeBiasAdd(keras.layers.Layer):
    """Caffe's one-input Bias: ``x + bias``, the bias already laid out to broadcast (``shape``)."""

    def __init__(self, shape: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.param_shape = tuple(int(d) for d in shape)

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(name="bias", shape=self.param_shape, initializer="zeros")

    def call(self, x: Any) -> Any:
        return x + self.bias

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.param_shape)}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeAxpy(keras.layers.Layer):
    """The SENet fork's Axpy, ``a * x + y``; ``a_shape`` reshapes a 2-D ``a`` (N, C) to broadcast
    against x's layout (``(-1, 1, 1, C)`` for NHWC)."""

    def __init__(self, a_shape: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.a_shape = None if a_shape is None else tuple(int(d) for d in a_shape)

    def call(self, inputs: list[Any]) -> Any:
        a, x, y = inputs
        if self.a_shape is not None:
            a = ops.reshape(a, self.a_shape)
        return a * x + y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "a_shape": None if self.a_shape is None else list(self.a_shape)}


def _second_input(ctx: BuildContext, node: Node, operation: str, ins: list[Any], bias: np.ndarray | None) -> Any:
    x_rank, s_shape, axis = ctx.rank(node.inputs[0]), ctx.shape(node.inputs[1]), node.attrs["axis"]
    full = [1] * axis + list(s_shape) + [1] * (x_rank - axis - len(s_shape))
    if axis == 0:
        full[0] = -1
    laid = None if bias is None else param_layout(bias, axis, x_rank, node.name)
    layer = CaffeBroadcast(operation, full, operand_nhwc=len(s_shape) == 4, nhwc=x_rank == 4,
                           bias_shape=None if laid is None else laid.shape, name=ctx.name(node))
    y = layer(ins)
    if laid is not None:
        set_weights(layer, bias=laid)
    return y


@builder("Bias")
def _bias(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    if len(ins) == 2:
        return [_second_input(ctx, node, "add", ins, None)]
    bias = ctx.param(node, "bias")
    laid = bias if node.attrs.get("scalar") else param_layout(bias, node.attrs["axis"], ctx.rank(node.inputs[0]),
                                                               node.name)
    layer = CaffeBiasAdd(laid.shape, name=ctx.name(node))
    y = layer(ins[0])
    set_weights(layer, bias=laid)
    return [y]


@builder("Multiply")
def _multiply(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return [_second_input(ctx, node, "mul", ins, ctx.param(node, "bias") if "bias" in node.params else None)]


@builder("Axpy")
def _axpy(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a_shape = ctx.shape(node.inputs[0])
    x_rank = ctx.rank(node.inputs[1])
    target = None
    if len(a_shape) == 2 and x_rank > 2:
        target = [-1, 1, 1, a_shape[1]] if x_rank == 4 else [-1, a_shape[1]] + [1] * (x_rank - 2)
    return [CaffeAxpy(target, name=ctx.name(node))(ins)]
