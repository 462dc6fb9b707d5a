"""Torch modules for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse and
ReverseTime. The fork's Lstm is the LSTM op without ``cont`` (:mod:`.recurrent`), its Transpose a Permute."""
from __future__ import annotations

import torch
from torch import nn

from ...ir import Graph, Node
from .ops import LayerSpec, builder


class CaffeReverse(nn.Module):
    """The OCR fork's Reverse: the input reversed along ``axis``."""

    def __init__(self, axis: int = 0) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, (self.axis,))


class CaffeReverseTime(nn.Module):
    """The OCR fork's ReverseTime over ``x`` (T, N, ...) and ``lengths`` (N): sample n's first L steps
    reversed; the rest copied (``copy_remaining``) or 0."""

    def __init__(self, copy_remaining: bool = False) -> None:
        super().__init__()
        self.copy_remaining = copy_remaining

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = int(x.shape[0])
        length = torch.trunc(lengths.to(torch.float32)).to(torch.int64).reshape(1, -1)
        t = torch.arange(steps, device=x.device).reshape(-1, 1)
        inside = t < length
        src = torch.where(inside, length - 1 - t, t).clamp(0, steps - 1)
        tail = (1,) * (x.dim() - 2)
        out = torch.gather(x, 0, src.reshape(*src.shape, *tail).expand(x.shape))
        if self.copy_remaining:
            return out
        return torch.where(inside.reshape(*inside.shape, *tail), out, torch.zeros_like(out))


HELPERS = (CaffeReverse, CaffeReverseTime)


@builder("Reverse")
def _reverse(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeReverse, {"axis": int(node.attrs["axis"])})


@builder("ReverseTime")
def _reverse_time(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeReverseTime, {"copy_remaining": bool(node.attrs["copy_remaining"])})
