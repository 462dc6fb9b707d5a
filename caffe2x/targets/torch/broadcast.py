"""Torch modules for the broadcast family (:mod:`caffe2x.layers.broadcast`): Bias, two-input Scale
(op ``Multiply``) and Axpy. The operand is viewed as ``(1,)*axis + shape + (1,)*rest`` and broadcast,
which is Caffe's rule; parameters keep Caffe's blob shape in the state_dict. The modules are
self-contained (``--emit-code`` copies their source)."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeBias(nn.Module):
    """Caffe's Bias: ``x + b``, ``b`` the learned ``bias`` (shape ``shape``) or the second input,
    covering the input's axes from ``axis`` (a one-element bias with ``scalar`` is added everywhere)."""

    def __init__(self, axis: int = 1, shape: tuple[int, ...] | None = None, scalar: bool = False) -> None:
        super().__init__()
        self.axis, self.scalar = axis, scalar
        if shape is not None:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        b = self.bias if b is None else b
        if self.scalar:
            return x + b.reshape(())
        return x + b.reshape((1,) * self.axis + tuple(b.shape) + (1,) * (x.dim() - self.axis - b.dim()))


class CaffeMultiply(nn.Module):
    """Caffe's Scale with a second input: ``x * s (+ bias)``, ``s`` covering the axes from ``axis``."""

    def __init__(self, axis: int = 1, bias_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.axis = axis
        if bias_shape is not None:
            self.bias = nn.Parameter(torch.zeros(bias_shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        y = x * s.reshape((1,) * self.axis + tuple(s.shape) + (1,) * (x.dim() - self.axis - s.dim()))
        if self.bias is None:
            return y
        return y + self.bias.reshape((1,) * self.axis + tuple(self.bias.shape) + (1,) * (x.dim() - self.axis - self.bias.dim()))


class CaffeAxpy(nn.Module):
    """The SENet fork's Axpy: ``a * x + y`` with ``a`` (N, C) or (N, C, 1, 1) per sample and channel."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2))) * x + y


HELPERS = (CaffeBias, CaffeMultiply, CaffeAxpy)


@builder("Bias")
def _bias(node: Node, graph: Graph) -> LayerSpec:
    if len(node.inputs) == 2:
        return LayerSpec(CaffeBias, {"axis": int(node.attrs["axis"])})
    bias = graph.param(node, "bias")
    return LayerSpec(CaffeBias, {"axis": int(node.attrs["axis"]), "shape": tuple(int(d) for d in bias.shape),
                                 "scalar": bool(node.attrs.get("scalar", False))}, {"bias": bias})


@builder("Multiply")
def _multiply(node: Node, graph: Graph) -> LayerSpec:
    if "bias" not in node.params:
        return LayerSpec(CaffeMultiply, {"axis": int(node.attrs["axis"])})
    bias = graph.param(node, "bias")
    return LayerSpec(CaffeMultiply, {"axis": int(node.attrs["axis"]), "bias_shape": tuple(int(d) for d in bias.shape)},
                     {"bias": bias})


@builder("Axpy")
def _axpy(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeAxpy, {})
