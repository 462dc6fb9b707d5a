"""ROIPooling and PSROIPooling as exact ``nn.Module`` classes (formulas: :mod:`caffe2x.layers.roi`);
the bins are computed with the forks' float32 arithmetic and C rounding."""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeROIPooling(nn.Module):
    """Fast R-CNN's ROIPooling: MAX over ``pooled`` bins of each region (rows ``[b, x1, y1, x2, y2]``)."""

    def __init__(self, pooled: tuple[int, int], spatial_scale: float) -> None:
        super().__init__()
        self.pooled = tuple(pooled)
        self.spatial_scale = spatial_scale

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        f32 = torch.float32
        h, w = int(x.shape[2]), int(x.shape[3])
        rois = rois.reshape(-1, 5).to(f32)
        batch = rois[:, 0].long()
        scaled = (rois[:, 1:] * torch.tensor(self.spatial_scale, dtype=f32)).to(torch.float64)
        corners = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).long()  # C's round: half away from 0

        def axis(start: torch.Tensor, end: torch.Tensor, bins: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            extent = torch.clamp(end - start + 1, min=1)
            bin_size = (extent.to(f32) / torch.tensor(float(bins), dtype=f32)).view(-1, 1)
            k = torch.arange(bins, dtype=f32).view(1, -1)
            lo = torch.floor(k * bin_size).long() + start.view(-1, 1)
            hi = torch.ceil((k + 1) * bin_size).long() + start.view(-1, 1)
            return lo.clamp(0, size), hi.clamp(0, size)

        hs, he = axis(corners[:, 1], corners[:, 3], self.pooled[0], h)
        ws, we = axis(corners[:, 0], corners[:, 2], self.pooled[1], w)
        out = torch.zeros((len(batch), int(x.shape[1]), *self.pooled), dtype=x.dtype)
        for r in range(len(batch)):
            for i in range(self.pooled[0]):
                for j in range(self.pooled[1]):
                    if he[r, i] > hs[r, i] and we[r, j] > ws[r, j]:
                        window = x[batch[r], :, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                        out[r, :, i, j] = window.amax(dim=(1, 2))
        return out

    def extra_repr(self) -> str:
        return f"pooled={self.pooled}, spatial_scale={self.spatial_scale}"


class CaffePSROIPooling(nn.Module):
    """R-FCN's PSROIPooling: output channel ``k`` at bin ``(i, j)`` averages input channel
    ``(k * g + i) * g + j`` over the bin (0 for an empty bin)."""

    def __init__(self, output_dim: int, group_size: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.group_size = group_size
        self.spatial_scale = spatial_scale

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        f32 = torch.float32
        n, _, h, w = (int(d) for d in x.shape)
        g = self.group_size
        rois = rois.reshape(-1, 5).to(f32)
        batch = rois[:, 0].long()
        scale = torch.tensor(self.spatial_scale, dtype=f32)
        coords = rois[:, 1:].to(torch.float64)
        rounded = (torch.sign(coords) * torch.floor(coords.abs() + 0.5)).to(f32)  # C's round: half away from 0
        start = rounded[:, :2] * scale
        end = (rounded[:, 2:] + 1) * scale
        extent = torch.clamp(end - start, min=0.1)
        bin_size = extent / torch.tensor(float(g), dtype=f32)
        k = torch.arange(g, dtype=f32).view(1, -1)

        def axis(i: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            lo = torch.floor(k * bin_size[:, i:i + 1] + start[:, i:i + 1]).long()
            hi = torch.ceil((k + 1) * bin_size[:, i:i + 1] + start[:, i:i + 1]).long()
            return lo.clamp(0, size), hi.clamp(0, size)

        hs, he = axis(1, h)
        ws, we = axis(0, w)
        grouped = x.reshape(n, self.output_dim, g, g, h, w)
        out = torch.zeros((len(batch), self.output_dim, g, g), dtype=x.dtype)
        for r in range(len(batch)):
            for i in range(g):
                for j in range(g):
                    if he[r, i] > hs[r, i] and we[r, j] > ws[r, j]:
                        window = grouped[batch[r], :, i, j, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                        area = float((he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j]))
                        out[r, :, i, j] = window.sum(dim=(1, 2)) / area
        return out

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, group_size={self.group_size}, spatial_scale={self.spatial_scale}"


@builder("ROIPooling")
def _roi_pooling(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeROIPooling, {"pooled": tuple(a["pooled"]), "spatial_scale": float(a["spatial_scale"])})


@builder("PSROIPooling")
def _psroi_pooling(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffePSROIPooling, {"output_dim": int(a["output_dim"]), "group_size": int(a["group_size"]),
                                         "spatial_scale": float(a["spatial_scale"])})


HELPER_CLASSES = (CaffeROIPooling, CaffePSROIPooling)
