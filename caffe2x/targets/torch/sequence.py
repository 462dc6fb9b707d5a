"""Torch modules for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse,
ReverseTime and CTCGreedyDecoder. The fork's Lstm is the LSTM op without ``cont`` (:mod:`.recurrent`), its Transpose a Permute."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


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


class CaffeCTCGreedyDecoder(nn.Module):
    """The OCR fork's CTCGreedyDecoder: (T, N, C) scores -> (N, T, 1, 1) labels, packed to the front,
    then -1 (the best class of each step, the first of equal maxima; blanks and repeats dropped)."""

    def __init__(self, blank_index: int = 0, merge_repeated: bool = True) -> None:
        super().__init__()
        self.blank_index, self.merge_repeated = blank_index, merge_repeated

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        steps, n = int(scores.shape[0]), int(scores.shape[1])
        scores = scores.reshape(steps, n, -1)
        classes = torch.arange(scores.shape[2], device=scores.device)
        top = scores.amax(dim=2, keepdim=True)
        best = torch.where(scores == top, classes, scores.shape[2]).amin(dim=2)  # first of equal maxima
        previous = torch.cat([torch.full_like(best[:1], -1), best[:-1]])
        keep = best != self.blank_index
        if self.merge_repeated:
            keep = keep & (best != previous)
        slot = torch.cumsum(keep.long(), dim=0) - 1                              # output position of step t
        at = keep.unsqueeze(2) & (slot.unsqueeze(2) == torch.arange(steps, device=scores.device))  # (T, N, T)
        labels = torch.where(at, best.unsqueeze(2).to(scores.dtype), torch.zeros((), dtype=scores.dtype)).sum(0)
        filled = at.any(dim=0)
        out = torch.where(filled, labels, torch.full_like(labels, -1.0))          # (N, T)
        return out.reshape(n, steps, 1, 1)


HELPERS = (CaffeReverse, CaffeReverseTime, CaffeCTCGreedyDecoder)


@builder("Reverse")
def _reverse(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeReverse, {"axis": int(node.attrs["axis"])})


@builder("ReverseTime")
def _reverse_time(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeReverseTime, {"copy_remaining": bool(node.attrs["copy_remaining"])})


@builder("CTCGreedyDecoder")
def _ctc_greedy_decoder(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeCTCGreedyDecoder, {"blank_index": int(node.attrs["blank_index"]),
                                             "merge_repeated": bool(node.attrs["merge_repeated"])})
