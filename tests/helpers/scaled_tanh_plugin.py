"""A fork layer registered from outside caffe2x: LeCun's scaled tanh ``y = a * tanh(b * x)``.

Used by tests/test_plugins.py and by the worked example of docs/forks.md (tests/e2e/test_fork_example.py):
every side of a layer, written the way a user writes them, with no change to caffe2x. The fork of the
worked example declares its own ``ScaledTanhParameter scaled_tanh_param { a, b }`` (read with
``--proto``); without the fork's schema the coefficients come from ``power_param``'s ``scale`` and
``shift`` (forks often reuse a stock message rather than add one).
"""
from __future__ import annotations

from typing import Any

import numpy as np

LAYER_TYPE = "ScaledTanh"


def read(layer: Any, ins: list[tuple[int, ...]], blobs: Any) -> Any:
    from caffe2x.caffe.reader import LayerSpec

    if layer.HasField("power_param"):
        a, b = layer.power_param.scale, layer.power_param.shift
    else:  # the fork's own message, present when the model was read with --proto
        a, b = layer.scaled_tanh_param.a, layer.scaled_tanh_param.b
    return LayerSpec("ScaledTanh", {"a": float(a), "b": float(b)})


def shape(node: Any, ins: list[tuple[int, ...]], graph: Any) -> list[tuple[int, ...]]:
    return [ins[0]]


def reference(node: Any, ins: list[np.ndarray], graph: Any) -> list[np.ndarray]:
    a, b = np.float32(node.attrs["a"]), np.float32(node.attrs["b"])
    return [(a * np.tanh(b * ins[0])).astype(np.float32)]


def torch_builder(node: Any, graph: Any) -> Any:
    from torch import nn

    from caffe2x.targets.torch import LayerSpec

    class ScaledTanh(nn.Module):
        def __init__(self, a: float, b: float) -> None:
            super().__init__()
            self.a, self.b = a, b

        def forward(self, x: Any) -> Any:
            return self.a * (self.b * x).tanh()

    return LayerSpec(ScaledTanh, {"a": node.attrs["a"], "b": node.attrs["b"]})


def keras_builder(ctx: Any, node: Any, ins: list[Any]) -> list[Any]:
    import keras

    a, b = node.attrs["a"], node.attrs["b"]
    scaled = keras.layers.Rescaling(b, name=ctx.aux(node, "in"))(ins[0])
    tanh = keras.layers.Activation("tanh", name=ctx.aux(node, "tanh"))(scaled)
    return [keras.layers.Rescaling(a, name=ctx.name(node))(tanh)]


def onnx_converter(b: Any, node: Any) -> None:
    inner = b.tmp("Mul", [b.inp(node), b.const(node, "b", np.float32(node.attrs["b"]))], node, "scaled")
    tanh = b.tmp("Tanh", [inner], node, "tanh")
    b.add("Mul", [tanh, b.const(node, "a", np.float32(node.attrs["a"]))], b.out(node), node.name)


def register() -> None:
    """The entry point a package would name in its ``caffe2x.layers`` group."""
    import caffe2x

    caffe2x.register_layer(LAYER_TYPE, reader=read, shape=shape, reference=reference, torch=torch_builder,
                           keras=keras_builder, onnx=onnx_converter, replace=True)
