"""Torch module for Embed (:mod:`caffe2x.layers.embedding`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder
from caffe2x.targets.torch.sizes import check_embed_index

torch.fx.wrap("check_embed_index")  # FX records the call: a check on the values, not traceable


class CaffeEmbed(nn.Module):
    """Caffe's Embed: row ``int(x)`` of ``weight`` (input_dim, num_output), plus ``bias``; the indices
    arrive as floats, as every Caffe blob, and are truncated like Caffe's ``static_cast<int>``."""

    def __init__(self, input_dim: int = 1, num_output: int = 1, bias: bool = True, layer: str = "embed") -> None:
        super().__init__()
        self.input_dim, self.layer = input_dim, layer
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_output))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(check_embed_index(x.long(), self.input_dim, self.layer), self.weight)
        return y if self.bias is None else y + self.bias


HELPERS = (CaffeEmbed,)


@builder("Embed")
def _embed(node: Node, graph: Graph) -> LayerSpec:
    tensors = {role: graph.tensors[key] for role, key in node.params.items()}
    return LayerSpec(CaffeEmbed, {"input_dim": int(node.attrs["input_dim"]), "num_output": int(node.attrs["num_output"]),
                                  "bias": "bias" in tensors, "layer": node.name}, tensors)
