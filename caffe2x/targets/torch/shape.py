"""Torch modules for the shape family (:mod:`caffe2x.layers.shape`): Reshape, Permute, Tile, Crop,
Slice. Torch is NCHW like Caffe, so every axis is Caffe's own."""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder
from caffe2x.targets.torch.sizes import check_crop, reshape_size

torch.fx.wrap("check_crop")  # FX records the calls instead of tracing their Python `if` on sizes
torch.fx.wrap("reshape_size")


class CaffeReshape(nn.Module):
    """Caffe's Reshape (memory order kept). With ``keep_batch`` the first dimension follows the input,
    so the module works at any batch size; when the batch is elsewhere (after a transpose) the
    prototxt's ``rule`` (start axis, replaced axes, dims with 0 = copy and -1 = infer) is applied to
    the input's shape, as Caffe does."""

    def __init__(self, shape: tuple[int, ...] = (), keep_batch: bool = True,
                 rule: tuple[int, int, tuple[int, ...]] | None = None, layer: str = "reshape") -> None:
        super().__init__()
        self.shape, self.keep_batch, self.rule, self.layer = tuple(shape), keep_batch, rule, layer
        #: the same as plain lists (TorchScript takes no Optional tuple of mixed types); start -1: no rule
        self.out: List[int] = [int(d) for d in shape]
        self.start, self.count = (int(rule[0]), int(rule[1])) if rule is not None else (-1, 0)
        self.dims: List[int] = [int(d) for d in rule[2]] if rule is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(reshape_size(x, self.out, self.keep_batch, self.start, self.count, self.dims, self.layer))


class CaffePermute(nn.Module):
    """SSD's Permute: ``x.permute(order)``."""

    def __init__(self, order: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.order = tuple(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


class CaffeTile(nn.Module):
    """Caffe's Tile: the block from ``axis`` on repeated ``tiles`` times along ``axis``."""

    def __init__(self, axis: int = 1, tiles: int = 1, rank: int = 4) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles
        self.reps = [tiles if i == axis else 1 for i in range(rank)]  # fixed when built: the input's rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.reps)


class CaffeCrop(nn.Module):
    """Caffe's Crop: axes from ``axis`` on cut to the reference's size (taken at run time, so the crop
    follows the input size), starting at ``offsets`` (one per axis of the input: its rank is fixed)."""

    def __init__(self, axis: int = 2, offsets: tuple[int, ...] = (), layer: str = "crop") -> None:
        super().__init__()
        self.axis, self.offsets, self.layer = axis, [int(o) for o in offsets], layer

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        x = check_crop(x, reference, self.axis, self.offsets, self.layer)
        for i in range(self.axis, len(self.offsets)):
            x = x.narrow(i, self.offsets[i], reference.shape[i])
        return x


class CaffeSlice(nn.Module):
    """Caffe's Slice: one output per interval ``points[i]:points[i + 1]`` of ``axis``."""

    def __init__(self, axis: int = 1, points: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.axis, self.points = axis, tuple(points)
        self.sizes = [b - a for a, b in zip(self.points, self.points[1:])]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return torch.split(x, self.sizes, dim=self.axis)  # a tuple (eager) or list (TorchScript): indexed, never unpacked


HELPERS = (CaffeReshape, CaffePermute, CaffeTile, CaffeCrop, CaffeSlice)


def keeps_batch(graph: Graph, node: Node) -> bool:
    """Whether a reshape leaves the batch axis alone (then any batch size works)."""
    x, y = graph.shapes[node.inputs[0]], graph.shapes[node.outputs[0]]
    return len(y) > 0 and len(x) > 0 and x[0] == y[0]


@builder("Reshape")
def _reshape(node: Node, graph: Graph) -> LayerSpec:
    rule = node.attrs.get("caffe_rule")
    kwargs = {"shape": tuple(int(d) for d in node.attrs["shape"]), "keep_batch": keeps_batch(graph, node),
              "layer": node.name}
    if rule:
        kwargs["rule"] = (int(rule["axis"]), int(rule["num_axes"]), tuple(int(d) for d in rule["dims"]))
    return LayerSpec(CaffeReshape, kwargs)


@builder("Permute")
def _permute(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffePermute, {"order": tuple(int(a) for a in node.attrs["order"])})


@builder("Tile")
def _tile(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeTile, {"axis": int(node.attrs["axis"]), "tiles": int(node.attrs["tiles"]),
                                 "rank": len(graph.shapes[node.inputs[0]])})


@builder("Crop")
def _crop(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeCrop, {"axis": int(node.attrs["axis"]), "offsets": tuple(int(o) for o in node.attrs["offsets"]),
                                 "layer": node.name})


@builder("Slice")
def _slice(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeSlice, {"axis": int(node.attrs["axis"]), "points": tuple(int(p) for p in node.attrs["points"])})
