"""Keras builder for ShuffleChannel (:mod:`caffe2x.layers.channels`): the channel axis is last for a
4-D (NHWC) tensor, axis 1 otherwise."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder, keras_axis


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeShuffleChannel(keras.layers.Layer):
    """ShuffleNet's channel shuffle along the Keras axis ``axis``: (group, C/group) transposed."""

    def __init__(self, group: int, axis: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group, self.axis = int(group), int(axis)

    def call(self, x: Any) -> Any:
        moved = ops.moveaxis(x, self.axis, -1)
        shape = tuple(int(d) for d in moved.shape[1:])
        c = shape[-1]
        grouped = ops.reshape(moved, (-1, *shape[:-1], self.group, c // self.group))
        rank = len(grouped.shape)
        perm = (*range(rank - 2), rank - 1, rank - 2)
        shuffled = ops.reshape(ops.transpose(grouped, perm), (-1, *shape))
        return ops.moveaxis(shuffled, -1, self.axis)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "group": self.group, "axis": self.axis}


@builder("ShuffleChannel")
def _shuffle(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    axis = keras_axis(1, ctx.rank(node.inputs[0]))
    return [CaffeShuffleChannel(node.attrs["group"], axis, name=ctx.name(node))(ins[0])]
