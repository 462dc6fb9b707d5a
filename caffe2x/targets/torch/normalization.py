"""Torch modules for the normalization family (:mod:`caffe2x.layers.normalization`): MVN and
BatchNorm with batch statistics (op ``MeanVarNorm``), the fork ``BN`` layer."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeMeanVarNorm(nn.Module):
    """Subtract the mean over ``axes``; with ``normalize_variance`` divide by ``std + eps`` (MVN) or
    ``sqrt(var + eps)`` (``eps_in_sqrt``: BatchNorm with batch statistics), biased variance."""

    def __init__(self, axes: tuple[int, ...] = (2, 3), eps: float = 1e-9, eps_in_sqrt: bool = False,
                 normalize_variance: bool = True) -> None:
        super().__init__()
        self.axes, self.eps, self.eps_in_sqrt, self.normalize_variance = tuple(axes), eps, eps_in_sqrt, normalize_variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=self.axes, keepdim=True)
        if not self.normalize_variance:
            return centred
        var = (centred * centred).mean(dim=self.axes, keepdim=True)
        return centred / (torch.sqrt(var + self.eps) if self.eps_in_sqrt else torch.sqrt(var) + self.eps)


class CaffeBN(nn.Module):
    """The fork BN layer on (N, C, H, W): ``affine`` ``x * weight + bias``; ``batch`` normalises with the
    batch's statistics first; ``stored`` with ``running_mean``/``running_var``. Tensors are (1, C, 1, 1)."""

    def __init__(self, channels: int = 1, mode: str = "affine", eps: float = 1e-5, stored: bool = False) -> None:
        super().__init__()
        self.mode, self.eps = mode, eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        if stored:
            self.register_buffer("running_mean", torch.zeros(1, channels, 1, 1))
            self.register_buffer("running_var", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "running_mean") and self.mode == "stored":  # TorchScript resolves hasattr when compiling
            x = (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        elif self.mode == "batch":
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = (x * x).mean(dim=(0, 2, 3), keepdim=True) - mean * mean
            x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight + self.bias


HELPERS = (CaffeMeanVarNorm, CaffeBN)


@builder("MeanVarNorm")
def _mvn(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeMeanVarNorm, {"axes": tuple(int(i) for i in a["axes"]), "eps": float(a["eps"]),
                                        "eps_in_sqrt": bool(a["eps_in_sqrt"]),
                                        "normalize_variance": bool(a["normalize_variance"])})


@builder("BN")
def _bn(node: Node, graph: Graph) -> LayerSpec:
    tensors = {role: graph.tensors[key] for role, key in node.params.items()}
    return LayerSpec(CaffeBN, {"channels": int(tensors["weight"].shape[1]), "mode": str(node.attrs["mode"]),
                               "eps": float(node.attrs["eps"]), "stored": "running_mean" in tensors}, tensors)
