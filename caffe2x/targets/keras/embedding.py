"""Keras builder for Embed (:mod:`caffe2x.layers.embedding`): indices are read in Caffe's order (a 4-D
NHWC input is permuted back first; a 4-D output goes to NHWC)."""
from __future__ import annotations

from typing import Any

import keras
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.ops import BuildContext, builder, set_weights


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeEmbed(keras.layers.Layer):
    """Caffe's Embed: row ``int(x)`` (truncated, as Caffe's ``static_cast<int>``) of ``weight``
    (input_dim, num_output), plus ``bias``."""

    def __init__(self, input_dim: int, num_output: int, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim, self.num_output, self.use_bias = int(input_dim), int(num_output), bool(use_bias)

    def build(self, input_shape: Any) -> None:
        self.weight = self.add_weight(name="weight", shape=(self.input_dim, self.num_output), initializer="zeros")
        self.bias = (self.add_weight(name="bias", shape=(self.num_output,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, x: Any) -> Any:
        y = ops.take(self.weight, ops.cast(x, "int32"), axis=0)
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape, self.num_output)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_dim": self.input_dim, "num_output": self.num_output,
                "use_bias": self.use_bias}


@builder("Embed")
def _embed(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    x = ctx.to_caffe_order(node, ins[0], ctx.rank(node.inputs[0]))
    layer = CaffeEmbed(node.attrs["input_dim"], node.attrs["num_output"], "bias" in node.params, name=ctx.name(node))
    y = layer(x)
    set_weights(layer, weight=ctx.param(node, "weight"),
                bias=ctx.param(node, "bias") if "bias" in node.params else None)
    return [ctx.from_caffe_order(node, y, ctx.rank(node.outputs[0]))]
