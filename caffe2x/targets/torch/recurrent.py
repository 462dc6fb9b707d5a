"""BVLC's LSTM and RNN as exact ``nn.Module`` classes (formulas: :mod:`caffe2x.layers.recurrent`): a
loop over the T timesteps with Caffe's gate order (i, f, o, g) and ``cont`` resetting the state."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, _tensors, builder


class CaffeRecurrent(nn.Module):
    """Caffe's LSTM (``kind='LSTM'``) or RNN over ``x`` (T, N, ...) and ``cont`` (T, N)."""

    def __init__(self, kind: str, input_size: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        gates = 4 * hidden if kind == "LSTM" else hidden
        self.x_weight = nn.Parameter(torch.zeros(gates, input_size))
        self.x_bias = nn.Parameter(torch.zeros(gates))
        self.h_weight = nn.Parameter(torch.zeros(gates, hidden))
        if kind == "RNN":
            self.o_weight = nn.Parameter(torch.zeros(hidden, hidden))
            self.o_bias = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor, cont: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``cont`` (the OCR fork's Lstm) every sample is one sequence: ``cont_t = t > 0``."""
        steps, n = int(x.shape[0]), int(x.shape[1])
        if cont is None:
            cont = (torch.arange(steps, device=x.device) > 0).to(x.dtype).reshape(steps, 1).expand(steps, n)
        hid = int(self.h_weight.shape[1])
        xw = x.reshape(steps, n, -1) @ self.x_weight.t() + self.x_bias
        h = x.new_zeros((n, hid))
        c = x.new_zeros((n, hid))
        outs = []
        for t in range(steps):
            keep = cont[t].reshape(n, 1).to(x.dtype)
            a = (keep * h) @ self.h_weight.t() + xw[t]
            if self.kind == "LSTM":
                i = torch.sigmoid(a[:, :hid])
                f = torch.where(keep == 0, torch.zeros_like(keep), keep * torch.sigmoid(a[:, hid:2 * hid]))
                o = torch.sigmoid(a[:, 2 * hid:3 * hid])
                g = torch.tanh(a[:, 3 * hid:])
                c = f * c + i * g
                h = o * torch.tanh(c)
                outs.append(h)
            else:
                h = torch.tanh(a)
                outs.append(torch.tanh(h @ self.o_weight.t() + self.o_bias))
        return torch.stack(outs)

    def extra_repr(self) -> str:
        return f"{self.kind}, input_size={self.x_weight.shape[1]}, hidden={self.h_weight.shape[1]}"


@builder("LSTM", "RNN")
def _recurrent(node: Node, graph: Graph) -> LayerSpec:
    wx = graph.param(node, "x_weight")
    return LayerSpec(CaffeRecurrent, {"kind": node.op, "input_size": int(wx.shape[1]),
                                      "hidden": int(node.attrs["num_output"])}, _tensors(node, graph))
