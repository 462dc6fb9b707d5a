"""MAX Pooling with a mask top, Upsample (unpooling / nearest) and Interp as exact ``nn.Module``
classes (formulas: :mod:`caffe2x.layers.resample`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.modules import CaffePooling
from caffe2x.targets.torch.ops import LayerSpec, builder
from caffe2x.targets.torch.sizes import check_min_size, check_unpool_mask, interp_axis, interp_size

torch.fx.wrap("check_min_size")
torch.fx.wrap("interp_size")  # FX records the calls: Caffe's Interp geometry is computed on sizes
torch.fx.wrap("interp_axis")
torch.fx.wrap("check_unpool_mask")


class CaffeMaxPoolWithMask(nn.Module):
    """Caffe's MAX pooling (ceil-mode windows, -inf padding) returning ``(values, mask)``; the mask is
    the flat index ``h * W + w`` of each window's first maximum in the unpadded input, as a float.

    As :class:`CaffePooling`, the input is padded by ``pad`` before and a fixed ``tail`` after (its
    ``tail_pad``, computed when built) and pooled without rounding up, so the window count is Caffe's
    at every input size with no size computed in Python; ``global_pooling`` takes each plane's first
    maximum. An input smaller than the window allows is an :class:`InputSizeError` naming ``layer``."""

    def __init__(self, kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 pad: tuple[int, int] = (0, 0), ceil: bool = True, global_pooling: bool = False,
                 tail: tuple[int, int] = (0, 0), layer: str = "pool") -> None:
        super().__init__()
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)
        self.ceil = ceil
        self.global_pooling = global_pooling
        self.layer = layer
        #: F.pad amounts (left, right, top, bottom)
        self.padding = [self.pad[1], int(tail[1]), self.pad[0], int(tail[0])]
        self.padded = sum(self.padding) > 0
        self.min_size = (max(1, self.kernel[0] - self.pad[0] - int(tail[0])),
                         max(1, self.kernel[1] - self.pad[1] - int(tail[1])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.global_pooling:
            y, idx = x.flatten(2).max(dim=2)  # the first maximum of each plane
            return y[:, :, None, None], idx.to(x.dtype)[:, :, None, None]
        x = check_min_size(x, self.min_size[0], self.min_size[1], self.layer)
        xp = F.pad(x, self.padding, value=float("-inf")) if self.padded else x
        y, idx = F.max_pool2d(xp, self.kernel, self.stride, return_indices=True)
        wp = x.shape[-1] + self.padding[0] + self.padding[1]
        mask = (idx // wp - self.pad[0]) * x.shape[-1] + (idx % wp - self.pad[1])
        return y, mask.to(x.dtype)


class CaffeUnpooling(nn.Module):
    """SegNet's Upsample: scatter each value to its mask index in a zero plane per channel; of several
    values sent to one index the last (in input order) wins, as in Caffe's loop. The plane is
    ``size`` when ``upsample_h``/``upsample_w`` fix it (``scale`` 0), else ``H * scale - pad_out`` of
    the input at run time (``size`` is then the plane at the size the net was read at). A mask index
    outside the plane is an :class:`InputSizeError` naming ``layer``."""

    def __init__(self, size: tuple[int, int] = (1, 1), scale: tuple[int, int] = (0, 0),
                 pad_out: tuple[int, int] = (0, 0), layer: str = "upsample") -> None:
        super().__init__()
        self.size, self.scale, self.pad_out = tuple(size), tuple(scale), tuple(pad_out)
        self.layer = layer

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.scale[0] > 0:
            oh, ow = x.shape[2] * self.scale[0] - self.pad_out[0], x.shape[3] * self.scale[1] - self.pad_out[1]
        else:
            oh, ow = self.size[0], self.size[1]
        vals = x.flatten(2)
        idx = check_unpool_mask(mask.flatten(2).long(), oh, ow, self.layer)
        order = torch.arange(idx.shape[2], device=idx.device).expand_as(idx)
        winner = idx.new_full((idx.shape[0], idx.shape[1], oh * ow), -1).scatter_reduce(2, idx, order, "amax")
        out = torch.gather(vals, 2, winner.clamp(min=0))
        out = torch.where(winner >= 0, out, torch.zeros_like(out))
        return out.reshape(x.shape[0], x.shape[1], oh, ow)

    def extra_repr(self) -> str:
        return f"size={self.size}" if self.scale[0] == 0 else f"scale={self.scale}, pad_out={self.pad_out}"


class CaffeUpsampleNearest(nn.Module):
    """The YOLO ports' Upsample: every value repeated ``scale`` times along H and W."""

    def __init__(self, scale: tuple[int, int]) -> None:
        super().__init__()
        self.scale = tuple(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.scale[0], dim=2).repeat_interleave(self.scale[1], dim=3)


class CaffeInterp(nn.Module):
    """PSPNet's Interp: crop the input by ``pad_beg``/``pad_end`` (<= 0), then align-corners bilinear to
    the size Caffe's ``InterpLayer::Reshape`` gives at run time (:func:`.sizes.interp_size`: ``shrink``,
    ``zoom``, explicit ``height``/``width`` fixed, or the second input's size; 0 = not set), with Caffe's
    float32 source positions (``(in - 1) / (out - 1) * i``, truncated; :func:`.sizes.interp_axis`).
    ``size``/``crop``/``region`` are the geometry at the size the net was read at (for ``extra_repr``)."""

    def __init__(self, size: tuple[int, int] = (1, 1), crop: tuple[int, int] = (0, 0), region: tuple[int, int] = (1, 1),
                 shrink: int = 0, zoom: int = 0, height: int = 0, width: int = 0, pad_beg: int = 0, pad_end: int = 0,
                 layer: str = "interp") -> None:
        super().__init__()
        self.size, self.crop, self.region = tuple(size), tuple(crop), tuple(region)
        self.shrink, self.zoom, self.height, self.width = int(shrink), int(zoom), int(height), int(width)
        self.pad_beg, self.pad_end, self.layer = int(pad_beg), int(pad_end), layer

    def forward(self, x: torch.Tensor, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        sizes = interp_size(x, like, self.shrink, self.zoom, self.height, self.width, self.pad_beg, self.pad_end,
                            self.layer)
        if self.pad_end < 0:  # negative ends count from the input's end: no size computed here
            src = x[:, :, -self.pad_beg:self.pad_end, -self.pad_beg:self.pad_end]
        else:
            src = x[:, :, -self.pad_beg:, -self.pad_beg:]
        h0, h1, a0, a1 = interp_axis(sizes[0], sizes[2])
        w0, w1, b0, b1 = interp_axis(sizes[1], sizes[3])
        a0, a1, b0, b1 = a0.to(x.dtype), a1.to(x.dtype), b0.to(x.dtype), b1.to(x.dtype)
        r0, r1 = src.index_select(2, h0), src.index_select(2, h1)
        top = b0 * r0.index_select(3, w0) + b1 * r0.index_select(3, w1)
        bottom = b0 * r1.index_select(3, w0) + b1 * r1.index_select(3, w1)
        return a0.view(-1, 1) * top + a1.view(-1, 1) * bottom

    def extra_repr(self) -> str:
        return f"size={self.size}, crop={self.crop}, region={self.region}"


@builder("PoolingWithMask")
def _pool_mask(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    tail = tuple(CaffePooling.tail_pad(k, st, p, bool(a["ceil"])) for k, st, p in zip(a["kernel"], a["stride"], a["pad"]))
    return LayerSpec(CaffeMaxPoolWithMask, {"kernel": tuple(a["kernel"]), "stride": tuple(a["stride"]),
                                            "pad": tuple(a["pad"]), "ceil": bool(a["ceil"]),
                                            "global_pooling": bool(a["global_pooling"]), "tail": tail,
                                            "layer": node.name})


@builder("Unpooling")
def _unpool(node: Node, graph: Graph) -> LayerSpec:
    rule = node.attrs.get("rule") or {"size": node.attrs["size"]}  # no rule: stored before it was kept
    kwargs = {"size": tuple(node.attrs["size"]), "layer": node.name}
    if "scale" in rule:
        kwargs.update({"scale": tuple(rule["scale"]), "pad_out": tuple(rule["pad_out"])})
    return LayerSpec(CaffeUnpooling, kwargs)


@builder("UpsampleNearest")
def _nearest(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeUpsampleNearest, {"scale": tuple(node.attrs["scale"])})


@builder("Interp")
def _interp(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    kwargs = {"size": tuple(a["size"]), "crop": tuple(a["crop"]), "region": tuple(a["region"])}
    rule = a.get("rule")
    if rule is None:  # a graph stored before the rule was kept: the geometry it was read at, fixed
        h = graph.shapes[node.inputs[0]][2]
        rule = {"shrink": None, "zoom": None, "height": a["size"][0], "width": a["size"][1],
                "pad_beg": -a["crop"][0], "pad_end": a["crop"][0] + a["region"][0] - h}
    kwargs.update({k: int(rule[k] or 0) for k in ("shrink", "zoom", "height", "width", "pad_beg", "pad_end")})
    return LayerSpec(CaffeInterp, {**kwargs, "layer": node.name})


HELPER_CLASSES = (CaffeMaxPoolWithMask, CaffeUnpooling, CaffeUpsampleNearest, CaffeInterp)
