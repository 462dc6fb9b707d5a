"""MAX Pooling with a mask top, Upsample (unpooling / nearest) and Interp as exact ``nn.Module``
classes (formulas: :mod:`caffe2x.layers.resample`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2x.graph.formulas import pool_window
from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeMaxPoolWithMask(nn.Module):
    """Caffe's MAX pooling (ceil-mode windows, -inf padding) returning ``(values, mask)``; the mask is
    the flat index ``h * W + w`` of each window's first maximum in the unpadded input, as a float."""

    def __init__(self, kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 pad: tuple[int, int] = (0, 0), ceil: bool = True, global_pooling: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
        self.ceil = ceil
        self.global_pooling = global_pooling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        kh, kw, sh, sw, ph, pw, oh, ow, rh, rw = pool_window(h, w, self.kernel, self.stride, self.pad, self.ceil,
                                                             self.global_pooling)
        xp = F.pad(x, (pw, rw, ph, rh), value=float("-inf")) if ph or pw or rh or rw else x
        y, idx = F.max_pool2d(xp, (kh, kw), (sh, sw), return_indices=True)
        y, idx = y[:, :, :oh, :ow], idx[:, :, :oh, :ow]
        wp = w + pw + rw
        mask = (idx // wp - ph) * w + (idx % wp - pw)
        return y, mask.to(x.dtype)


class CaffeUnpooling(nn.Module):
    """SegNet's Upsample: scatter each value to its mask index in a zero ``size`` plane per channel;
    of several values sent to one index the last (in input order) wins, as in Caffe's loop."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c = int(x.shape[0]), int(x.shape[1])
        plane = self.size[0] * self.size[1]
        vals = x.reshape(n * c, -1)
        idx = mask.reshape(n * c, -1).long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= plane):
            raise ValueError(f"Upsample mask index outside the {self.size[0]}x{self.size[1]} output")
        order = torch.arange(idx.shape[1]).expand_as(idx)
        winner = torch.full((n * c, plane), -1, dtype=torch.long).scatter_reduce(1, idx, order, "amax")
        out = torch.gather(vals, 1, winner.clamp(min=0))
        out = torch.where(winner >= 0, out, torch.zeros_like(out))
        return out.reshape(n, c, *self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class CaffeUpsampleNearest(nn.Module):
    """The YOLO ports' Upsample: every value repeated ``scale`` times along H and W."""

    def __init__(self, scale: tuple[int, int]) -> None:
        super().__init__()
        self.scale = tuple(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.scale[0], dim=2).repeat_interleave(self.scale[1], dim=3)


class CaffeInterp(nn.Module):
    """PSPNet's Interp: crop ``region`` at ``crop``, then align-corners bilinear to ``size`` with
    Caffe's float32 source positions (``(in - 1) / (out - 1) * i``, truncated)."""

    def __init__(self, size: tuple[int, int], crop: tuple[int, int], region: tuple[int, int]) -> None:
        super().__init__()
        self.size, self.crop, self.region = tuple(size), tuple(crop), tuple(region)

    @staticmethod
    def axis(src: int, dst: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f32 = torch.float32
        r = torch.tensor(src - 1, dtype=f32) / torch.tensor(dst - 1, dtype=f32) if dst > 1 else torch.tensor(0.0)
        pos = r * torch.arange(dst, dtype=f32)
        i0 = pos.long()
        i1 = i0 + (i0 < src - 1).long()
        lam1 = pos - i0.to(f32)
        return i0, i1, 1 - lam1, lam1

    def forward(self, x: torch.Tensor, *like: torch.Tensor) -> torch.Tensor:
        t, l = self.crop
        src = x[:, :, t:t + self.region[0], l:l + self.region[1]]
        h0, h1, a0, a1 = self.axis(self.region[0], self.size[0])
        w0, w1, b0, b1 = self.axis(self.region[1], self.size[1])
        a0, a1, b0, b1 = (v.to(x.dtype) for v in (a0, a1, b0, b1))
        r0, r1 = src.index_select(2, h0), src.index_select(2, h1)
        top = b0 * r0.index_select(3, w0) + b1 * r0.index_select(3, w1)
        bottom = b0 * r1.index_select(3, w0) + b1 * r1.index_select(3, w1)
        return a0.view(-1, 1) * top + a1.view(-1, 1) * bottom

    def extra_repr(self) -> str:
        return f"size={self.size}, crop={self.crop}, region={self.region}"


@builder("PoolingWithMask")
def _pool_mask(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeMaxPoolWithMask, {"kernel": tuple(a["kernel"]), "stride": tuple(a["stride"]),
                                            "pad": tuple(a["pad"]), "ceil": bool(a["ceil"]),
                                            "global_pooling": bool(a["global_pooling"])})


@builder("Unpooling")
def _unpool(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeUnpooling, {"size": tuple(node.attrs["size"])})


@builder("UpsampleNearest")
def _nearest(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeUpsampleNearest, {"scale": tuple(node.attrs["scale"])})


@builder("Interp")
def _interp(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeInterp, {"size": tuple(a["size"]), "crop": tuple(a["crop"]), "region": tuple(a["region"])})


HELPER_CLASSES = (CaffeMaxPoolWithMask, CaffeUnpooling, CaffeUpsampleNearest, CaffeInterp)
