"""Keras builders for the reduction family (:mod:`caffe2x.layers.reduction`): Reduction and ArgMax both
work in Caffe's axis order (a 4-D input is permuted back to NCHW first, a 4-D output to NHWC after),
since both flatten trailing axes in Caffe's memory order. Keras' ``top_k`` breaks ties by the smaller
index, Caffe by the larger: ArgMax runs it on the reversed axis and maps the indices back."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeReduction(keras.layers.Layer):
    """Caffe's Reduction on a Caffe-ordered tensor: every axis from ``axis`` (>= 1) reduced."""

    def __init__(self, operation: str, axis: int, coeff: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.operation, self.axis, self.coeff = operation, int(axis), float(coeff)

    def call(self, x: Any) -> Any:
        axes = tuple(range(self.axis, len(x.shape)))
        if self.operation == "asum":
            x = ops.abs(x)
        elif self.operation == "sumsq":
            x = x * x
        count = 1
        for d in x.shape[self.axis:]:
            count *= int(d)
        coeff = self.coeff / count if self.operation == "mean" else self.coeff
        return ops.sum(x, axis=axes) * coeff

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:self.axis])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "operation": self.operation, "axis": self.axis, "coeff": self.coeff}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeArgMax(keras.layers.Layer):
    """Caffe's ArgMax on a Caffe-ordered tensor; ``out_shape`` is Caffe's output shape (batch first)."""

    def __init__(self, top_k: int, out_max_val: bool, axis: int | None, out_shape: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_k, self.out_max_val = int(top_k), bool(out_max_val)
        self.axis = None if axis is None else int(axis)
        self.out_shape = tuple(int(d) for d in out_shape)

    def top(self, v: Any) -> tuple[Any, Any]:
        """The ``top_k`` largest along the last axis, equal values by the larger index first (Caffe):
        ``top_k`` keeps the lower index of equals, so it runs on the reversed axis."""
        size = int(v.shape[-1])
        values, flipped = ops.top_k(ops.flip(v, axis=-1), self.top_k, sorted=True)
        return values, (size - 1) - flipped

    def call(self, x: Any) -> Any:
        if self.axis is not None:
            moved = ops.moveaxis(x, self.axis, -1)
            values, indices = self.top(moved)
            y = values if self.out_max_val else ops.cast(indices, x.dtype)
            return ops.moveaxis(y, -1, self.axis)
        values, indices = self.top(ops.reshape(x, (-1, self.count(x))))
        parts = [ops.cast(indices, x.dtype)] + ([values] if self.out_max_val else [])
        return ops.reshape(ops.stack(parts, axis=1), (-1, *self.out_shape[1:]))

    @staticmethod
    def count(x: Any) -> int:
        n = 1
        for d in x.shape[1:]:
            n *= int(d)
        return n

    def compute_output_shape(self, input_shape: Any) -> Any:
        # along the batch axis (0) the first axis holds the top_k, no longer the batch
        return (self.top_k if self.axis == 0 else input_shape[0], *self.out_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "top_k": self.top_k, "out_max_val": self.out_max_val, "axis": self.axis,
                "out_shape": list(self.out_shape)}


@builder("Reduction")
def _reduction(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    x = ctx.to_caffe_order(node, ins[0], ctx.rank(node.inputs[0]))
    y = CaffeReduction(a["operation"], a["axis"], a["coeff"], name=ctx.name(node))(x)
    return [ctx.from_caffe_order(node, y, ctx.rank(node.outputs[0]))]


@builder("ArgMax")
def _argmax(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    x = ctx.to_caffe_order(node, ins[0], ctx.rank(node.inputs[0]))
    y = CaffeArgMax(a["top_k"], a["out_max_val"], a["axis"], ctx.shape(node.outputs[0]), name=ctx.name(node))(x)
    return [ctx.from_caffe_order(node, y, ctx.rank(node.outputs[0]))]
