"""BVLC's LSTM and RNN as a registered Keras layer written with ``keras.ops``, unrolled over the static
T timesteps with Caffe's gate order (i, f, o, g) and ``cont`` resetting the state (no ``cont``: the OCR
fork's Lstm, one sequence per sample; formulas:
:mod:`caffe2x.layers.recurrent`). Keras' own LSTM has no per-step reset and another gate order."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.graph.ir import Node
from caffe2x.targets.keras.layers import CUSTOM_OBJECTS
from caffe2x.targets.keras.ops import BuildContext, builder, set_weights

_PACKAGE = "caffe2x"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeRecurrent(keras.layers.Layer):
    """Caffe's LSTM or RNN over ``[x (T, N, ...), cont (T, N)]`` -> (T, N, num_output)."""

    def __init__(self, kind: str, num_output: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.num_output = int(num_output)

    def build(self, x_shape: Any, cont_shape: Any = None) -> None:
        inputs = int(np.prod(x_shape[2:]))
        hid = self.num_output
        gates = 4 * hid if self.kind == "LSTM" else hid
        self.x_weight = self.add_weight(name="x_weight", shape=(gates, inputs), initializer="zeros")
        self.x_bias = self.add_weight(name="x_bias", shape=(gates,), initializer="zeros")
        self.h_weight = self.add_weight(name="h_weight", shape=(gates, hid), initializer="zeros")
        if self.kind == "RNN":
            self.o_weight = self.add_weight(name="o_weight", shape=(hid, hid), initializer="zeros")
            self.o_bias = self.add_weight(name="o_bias", shape=(hid,), initializer="zeros")

    def call(self, x: Any, cont: Any = None) -> Any:
        """Without ``cont`` (the OCR fork's Lstm) every sample is one sequence: ``cont_t = t > 0``."""
        steps, hid = int(x.shape[0]), self.num_output
        n = ops.shape(x)[1]
        xw = ops.matmul(ops.reshape(x, (steps, n, -1)), ops.transpose(self.x_weight)) + self.x_bias
        h = ops.zeros_like(xw[0][:, :hid])
        c = h
        outs = []
        for t in range(steps):
            keep = (ops.expand_dims(ops.cast(cont[t], x.dtype), 1) if cont is not None
                    else ops.ones_like(h[:, :1]) * (1.0 if t > 0 else 0.0))
            a = ops.matmul(keep * h, ops.transpose(self.h_weight)) + xw[t]
            if self.kind == "LSTM":
                i = ops.sigmoid(a[:, :hid])
                f = ops.where(keep == 0, ops.zeros_like(keep), keep * ops.sigmoid(a[:, hid:2 * hid]))
                o = ops.sigmoid(a[:, 2 * hid:3 * hid])
                g = ops.tanh(a[:, 3 * hid:])
                c = f * c + i * g
                h = o * ops.tanh(c)
                outs.append(h)
            else:
                h = ops.tanh(a)
                outs.append(ops.tanh(ops.matmul(h, ops.transpose(self.o_weight)) + self.o_bias))
        return ops.stack(outs)

    def compute_output_shape(self, x_shape: Any, cont_shape: Any = None) -> tuple[Any, ...]:
        return (x_shape[0], x_shape[1], self.num_output)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "num_output": self.num_output}


CUSTOM_OBJECTS[CaffeRecurrent.__name__] = CaffeRecurrent


@builder("LSTM", "RNN")
def _recurrent(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    layer = CaffeRecurrent(node.op, node.attrs["num_output"], name=ctx.name(node))
    x = ctx.to_caffe_order(node, ins[0], ctx.rank(node.inputs[0]))  # a 4-D x arrives NHWC
    y = layer(x, ins[1]) if len(ins) > 1 else layer(x)
    set_weights(layer, **{role: ctx.param(node, role) for role in node.params})
    return [y]
