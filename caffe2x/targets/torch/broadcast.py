"""Torch modules for the broadcast family (:mod:`caffe2x.layers.broadcast`): Bias, two-input Scale
(op ``Multiply``) and Axpy. The operand is viewed as ``(1,)*axis + shape + (1,)*rest`` and broadcast,
which is Caffe's rule; parameters keep Caffe's blob shape in the state_dict. The modules are
self-contained (``--emit-code`` copies their source)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeBias(nn.Module):
    """Caffe's Bias: ``x + b``, ``b`` the learned ``bias`` (shape ``shape``) or the second input (of shape
    ``operand``), covering the input's axes from ``axis`` (a one-element bias with ``scalar`` is added
    everywhere). The broadcast view is fixed when built (``rank``: the input's), so forward does no size
    arithmetic."""

    def __init__(self, axis: int = 1, shape: tuple[int, ...] | None = None, scalar: bool = False,
                 operand: tuple[int, ...] | None = None, rank: int = 4) -> None:
        super().__init__()
        self.axis, self.scalar = axis, scalar
        dims = [int(d) for d in (shape if shape is not None else operand or ())]
        if shape is None and axis == 0 and dims:
            dims[0] = -1  # an operand covering the batch follows it
        self.view_shape = [1] * axis + dims + [1] * (rank - axis - len(dims))
        if shape is not None:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
        if b is None:
            b = self.bias
        assert b is not None  # one of the two is given (TorchScript needs the refinement)
        if self.scalar:
            return x + b.reshape(())
        return x + b.reshape(self.view_shape)


class CaffeMultiply(nn.Module):
    """Caffe's Scale with a second input: ``x * s (+ bias)``, ``s`` (of shape ``operand``) covering the
    axes from ``axis``; the broadcast views are fixed when built (``rank``: the input's)."""

    def __init__(self, axis: int = 1, bias_shape: tuple[int, ...] | None = None,
                 operand: tuple[int, ...] = (), rank: int = 4) -> None:
        super().__init__()
        self.axis = axis
        dims = [int(d) for d in operand]
        if axis == 0 and dims:
            dims[0] = -1  # an operand covering the batch follows it
        self.view_shape = [1] * axis + dims + [1] * (rank - axis - len(dims))
        bias_dims = [int(d) for d in bias_shape or ()]
        self.bias_view = [1] * axis + bias_dims + [1] * (rank - axis - len(bias_dims))
        if bias_shape is not None:
            self.bias = nn.Parameter(torch.zeros(bias_shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        y = x * s.reshape(self.view_shape)
        if self.bias is None:
            return y
        return y + self.bias.reshape(self.bias_view)


class CaffeAxpy(nn.Module):
    """The SENet fork's Axpy: ``a * x + y`` with ``a`` (N, C) or (N, C, 1, 1) per sample and channel."""

    def __init__(self, rank: int = 4) -> None:
        super().__init__()
        self.rank = rank

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a.reshape([a.shape[0], a.shape[1]] + [1] * (self.rank - 2)) * x + y


HELPERS = (CaffeBias, CaffeMultiply, CaffeAxpy)


@builder("Bias")
def _bias(node: Node, graph: Graph) -> LayerSpec:
    rank = len(graph.shapes[node.inputs[0]])
    if len(node.inputs) == 2:
        return LayerSpec(CaffeBias, {"axis": int(node.attrs["axis"]), "operand": tuple(graph.shapes[node.inputs[1]]),
                                     "rank": rank})
    bias = graph.param(node, "bias")
    return LayerSpec(CaffeBias, {"axis": int(node.attrs["axis"]), "shape": tuple(int(d) for d in bias.shape),
                                 "scalar": bool(node.attrs.get("scalar", False)), "rank": rank}, {"bias": bias})


@builder("Multiply")
def _multiply(node: Node, graph: Graph) -> LayerSpec:
    common = {"axis": int(node.attrs["axis"]), "operand": tuple(int(d) for d in graph.shapes[node.inputs[1]]),
              "rank": len(graph.shapes[node.inputs[0]])}
    if "bias" not in node.params:
        return LayerSpec(CaffeMultiply, common)
    bias = graph.param(node, "bias")
    return LayerSpec(CaffeMultiply, {**common, "bias_shape": tuple(int(d) for d in bias.shape)}, {"bias": bias})


@builder("Axpy")
def _axpy(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeAxpy, {"rank": len(graph.shapes[node.inputs[1]])})
