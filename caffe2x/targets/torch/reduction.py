"""Torch modules for the reduction family (:mod:`caffe2x.layers.reduction`): Reduction, ArgMax."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder
from caffe2x.targets.torch.sizes import check_top_k

torch.fx.wrap("check_top_k")  # FX records the call instead of tracing its Python `if` on sizes


class CaffeReduction(nn.Module):
    """Caffe's Reduction over every axis from ``axis``: sum, sum of |x|, sum of squares or mean, times
    ``coeff``."""

    def __init__(self, operation: str = "sum", axis: int = 0, coeff: float = 1.0) -> None:
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(self.axis)  # axis 0: one vector, summed to a scalar
        if self.operation == "asum":
            flat = flat.abs()
        elif self.operation == "sumsq":
            flat = flat * flat
        coeff = self.coeff / flat.shape[-1] if self.operation == "mean" else self.coeff
        return flat.sum(dim=-1) * coeff


class CaffeArgMax(nn.Module):
    """Caffe's ArgMax: the ``top_k`` largest along ``axis`` (indices, or values with ``out_max_val``),
    or over each sample's values when ``axis`` is None (indices, then values, as (N, 1|2, top_k, …))."""

    def __init__(self, top_k: int = 1, out_max_val: bool = False, axis: int | None = None,
                 out_shape: tuple[int, ...] = (), layer: str = "argmax") -> None:
        super().__init__()
        self.layer = layer
        self.top_k, self.out_max_val, self.axis, self.out_shape = top_k, out_max_val, axis, tuple(out_shape)
        #: the output's dims after the batch (fixed by top_k and the input's rank), a list for TorchScript
        self.tail: List[int] = [int(d) for d in out_shape[1:]]

    def top(self, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``top_k`` largest along ``dim``, equal values by the larger index first (Caffe's
        partial_sort of (value, index) pairs): a stable descending sort of the reversed axis."""
        values, flipped = torch.sort(torch.flip(x, (dim,)), dim=dim, descending=True, stable=True)
        indices = flipped.narrow(dim, 0, self.top_k).neg() + (x.shape[dim] - 1)  # the size stays symbolic
        return values.narrow(dim, 0, self.top_k), indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_top_k(x, -1 if self.axis is None else self.axis, self.top_k, self.layer)
        if self.axis is not None:
            values, indices = self.top(x, self.axis)
            return values if self.out_max_val else indices.to(x.dtype)
        values, indices = self.top(x.reshape(x.shape[0], -1), 1)
        parts = [indices.to(x.dtype)] + ([values] if self.out_max_val else [])
        return torch.stack(parts, dim=1).reshape([x.shape[0]] + self.tail)


HELPERS = (CaffeReduction, CaffeArgMax)


@builder("Reduction")
def _reduction(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeReduction, {"operation": str(a["operation"]), "axis": int(a["axis"]), "coeff": float(a["coeff"])})


@builder("ArgMax")
def _argmax(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeArgMax, {"top_k": int(a["top_k"]), "out_max_val": bool(a["out_max_val"]),
                                   "axis": None if a["axis"] is None else int(a["axis"]),
                                   "out_shape": tuple(int(d) for d in graph.shapes[node.outputs[0]]),
                                   "layer": node.name})
