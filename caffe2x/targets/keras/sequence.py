"""Keras builders for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse,
ReverseTime and CTCGreedyDecoder as registered layers written with ``keras.ops`` (the fork's Lstm is the LSTM op without
``cont``, :mod:`.recurrent`; its Transpose is a Permute, :mod:`.shape`).

A sequence blob (T, N, ...) has the time axis first, which is the Keras tensor's first axis, as for
the recurrent layers: the model is run on the whole sequence at once (call it, do not let ``predict``
split its first axis into batches)."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder, keras_axis


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


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeCTCGreedyDecoder(keras.layers.Layer):
    """The OCR fork's CTCGreedyDecoder: (T, N, C) scores -> labels (N, T) packed to the front, then -1
    (the best class of each step, the first of equal maxima; blanks and repeats dropped). Returned as
    (N, 1, 1, T), the NHWC form of Caffe's (N, T, 1, 1)."""

    def __init__(self, blank_index: int, merge_repeated: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blank_index, self.merge_repeated = int(blank_index), bool(merge_repeated)

    def call(self, scores: Any) -> Any:
        steps, classes = int(scores.shape[0]), int(scores.shape[2])
        top = ops.max(scores, axis=2, keepdims=True)
        index = ops.reshape(ops.arange(classes, dtype="int32"), (1, 1, classes))
        best = ops.min(ops.where(ops.equal(scores, top), index, classes), axis=2)  # (T, N), first maximum
        previous = ops.concatenate([ops.full_like(best[:1], -1), best[:-1]], axis=0)
        keep = ops.not_equal(best, self.blank_index)
        if self.merge_repeated:
            keep = ops.logical_and(keep, ops.not_equal(best, previous))
        slot = ops.cumsum(ops.cast(keep, "int32"), axis=0) - 1
        positions = ops.reshape(ops.arange(steps, dtype="int32"), (1, 1, steps))
        at = ops.logical_and(ops.expand_dims(keep, 2), ops.equal(ops.expand_dims(slot, 2), positions))  # (T, N, T)
        labels = ops.sum(ops.where(at, ops.cast(ops.expand_dims(best, 2), scores.dtype), 0.0), axis=0)  # (N, T)
        out = ops.where(ops.any(at, axis=0), labels, -1.0)
        return ops.reshape(out, (-1, 1, 1, steps))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[1], 1, 1, input_shape[0])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "blank_index": self.blank_index, "merge_repeated": self.merge_repeated}


@builder("CTCGreedyDecoder")
def _ctc_greedy_decoder(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    scores = ctx.to_caffe_order(node, ins[0], ctx.rank(node.inputs[0]))
    return [CaffeCTCGreedyDecoder(a["blank_index"], a["merge_repeated"], name=ctx.name(node))(scores)]


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
