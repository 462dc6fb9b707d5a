"""Torch module for ShuffleChannel (:mod:`caffe2x.layers.channels`; ConvolutionDepthwise is read as a
grouped Convolution)."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeShuffleChannel(nn.Module):
    """ShuffleNet's channel shuffle: channels as (group, C/group), transposed."""

    def __init__(self, group: int = 1) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (self.group, -1)).transpose(1, 2).flatten(1, 2)


HELPERS = (CaffeShuffleChannel,)


@builder("ShuffleChannel")
def _shuffle(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeShuffleChannel, {"group": int(node.attrs["group"])})
