"""Keras builders for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse and
ReverseTime as registered layers written with ``keras.ops`` (the fork's Lstm is the LSTM op without
``cont``, :mod:`.recurrent`; its Transpose is a Permute, :mod:`.shape`).

A sequence blob (T, N, ...) has the time axis first, which is the Keras tensor's first axis, as for
the recurrent layers: the model is run on the whole sequence at once (call it, do not let ``predict``
split its first axis into batches)."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ...ir import Node
from .ops import BuildContext, builder, keras_axis


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeReverse(keras.layers.Layer):
    """The OCR fork's Reverse along the Keras axis ``axis``."""

    def __init__(self, axis: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def call(self, x: Any) -> Any:
        return ops.flip(x, axis=self.axis)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeReverseTime(keras.layers.Layer):
    """The OCR fork's ReverseTime over ``[x (T, N, ...), lengths (N)]`` (Caffe's axis order)."""

    def __init__(self, copy_remaining: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.copy_remaining = bool(copy_remaining)

    def call(self, x: Any, lengths: Any) -> Any:
        steps = int(x.shape[0])
        tail = (1,) * (len(x.shape) - 2)
        length = ops.expand_dims(ops.cast(ops.trunc(ops.cast(lengths, "float32")), "int32"), 0)  # (1, N)
        t = ops.expand_dims(ops.arange(steps, dtype="int32"), 1)                               # (T, 1)
        inside = ops.less(t, length)
        src = ops.clip(ops.where(inside, length - 1 - t, t + ops.zeros_like(length)), 0, steps - 1)
        src = ops.reshape(src, (steps, -1, *tail))
        out = ops.take_along_axis(x, ops.broadcast_to(src, ops.shape(x)), axis=0)
        if self.copy_remaining:
            return out
        return ops.where(ops.reshape(inside, (steps, -1, *tail)), out, ops.zeros_like(out))

    def compute_output_shape(self, x_shape: Any, lengths_shape: Any = None) -> Any:
        return x_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "copy_remaining": self.copy_remaining}


@builder("Reverse")
def _reverse(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    axis = keras_axis(int(node.attrs["axis"]), ctx.rank(node.inputs[0]))
    return [CaffeReverse(axis, name=ctx.name(node))(ins[0])]


@builder("ReverseTime")
def _reverse_time(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    rank = ctx.rank(node.inputs[0])
    x = ctx.to_caffe_order(node, ins[0], rank)
    y = CaffeReverseTime(node.attrs["copy_remaining"], name=ctx.name(node))(x, ins[1])
    return [ctx.from_caffe_order(node, y, rank)]
