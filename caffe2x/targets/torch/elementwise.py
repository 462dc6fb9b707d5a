"""Torch modules for the element-wise layer family (:mod:`caffe2x.layers.elementwise`): Power, AbsVal,
BNLL, Exp, Log, Threshold, Clip, Swish. Standard ``torch.nn`` modules where one computes Caffe's
formula (``nn.Softplus`` is BNLL, ``nn.Hardtanh`` is Clip, ``nn.SiLU`` is Swish with beta 1), small
modules here otherwise (copied verbatim into ``--emit-code`` output, so they use only torch)."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.formulas import power_constant
from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffePower(nn.Module):
    """Caffe's Power: ``(shift + scale * x) ** power``; ``constant`` (when ``power * scale == 0``) is
    written everywhere instead, as Caffe does without reading the input."""

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, constant: float | None = None) -> None:
        super().__init__()
        self.power, self.scale, self.shift, self.constant = power, scale, shift, constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant is not None:
            return torch.full_like(x, self.constant)
        y = x * self.scale if self.scale != 1 else x
        y = y + self.shift if self.shift != 0 else y
        return torch.pow(y, self.power) if self.power != 1 else y


class CaffeAbsVal(nn.Module):
    """Caffe's AbsVal: ``|x|``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class CaffeExp(nn.Module):
    """Caffe's Exp as it computes it: ``outer_scale * exp(inner_scale * x)``."""

    def __init__(self, inner_scale: float = 1.0, outer_scale: float = 1.0) -> None:
        super().__init__()
        self.inner_scale, self.outer_scale = inner_scale, outer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x * self.inner_scale if self.inner_scale != 1 else x)
        return y * self.outer_scale if self.outer_scale != 1 else y


class CaffeLog(nn.Module):
    """Caffe's Log: ``log(shift + scale * x) * base_scale``."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0, base_scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.scale if self.scale != 1 else x
        y = torch.log(y + self.shift if self.shift != 0 else y)
        return y * self.base_scale if self.base_scale != 1 else y


class CaffeThreshold(nn.Module):
    """Caffe's Threshold: 1 where ``x > threshold`` (strictly), else 0."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class CaffeSwish(nn.Module):
    """Caffe's Swish: ``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x * self.beta)


HELPERS = (CaffePower, CaffeAbsVal, CaffeExp, CaffeLog, CaffeThreshold, CaffeSwish)


@builder("Power")
def _power(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffePower, {"power": float(a["power"]), "scale": float(a["scale"]), "shift": float(a["shift"]),
                                  "constant": power_constant(a)})


@builder("AbsVal")
def _absval(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeAbsVal, {})


@builder("BNLL")
def _bnll(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Softplus, {})


@builder("Exp")
def _exp(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeExp, {"inner_scale": float(node.attrs["inner_scale"]),
                                "outer_scale": float(node.attrs["outer_scale"])})


@builder("Log")
def _log(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeLog, {"scale": float(a["scale"]), "shift": float(a["shift"]), "base_scale": float(a["base_scale"])})


@builder("Threshold")
def _threshold(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeThreshold, {"threshold": float(node.attrs["threshold"])})


@builder("Clip")
def _clip(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Hardtanh, {"min_val": float(node.attrs["min"]), "max_val": float(node.attrs["max"])})


@builder("Swish")
def _swish(node: Node, graph: Graph) -> LayerSpec:
    beta = float(node.attrs["beta"])
    return LayerSpec(nn.SiLU, {}) if beta == 1.0 else LayerSpec(CaffeSwish, {"beta": beta})
