"""Fine-tuning in PyTorch: :func:`prepare` (new head, freezing by Caffe layer name) and the Caffe input
pipeline as :class:`CaffePreprocess` (an ``nn.Module``) and :class:`CaffeTransform` (a torchvision-style
callable that needs no torchvision). Imports torch and nothing else heavy.

The preprocessing numbers come from :mod:`caffe2x.validation.preprocess` (the validator's pipeline): resize and
crop matrices, crop offsets and means are computed there in numpy; this module only gathers rows of
those matrices and multiplies, so the two cannot drift.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from caffe2x.errors import Caffe2xError
from caffe2x.finetune import FreezeSpec, frozen_layers, resolve_layer
from caffe2x.targets.torch.model import CaffeNet, Step
from caffe2x.targets.torch.modules import CaffeInnerProduct
from caffe2x.validation import preprocess as pp

__all__ = ["CaffePreprocess", "CaffeTransform", "prepare", "HEAD_INIT_STD"]

#: standard deviation of the new head's Gaussian weights (Caffe's fine-tuning recipes: gaussian 0.01,
#: bias 0), small so the pretrained features decide the first steps
HEAD_INIT_STD = 0.01


# =========================================================================== head + freezing
def _layer_order(module: CaffeNet) -> list[str]:
    return [module.caffe_names[s.module] for s in module.steps]


def _replan(steps: Sequence[Step], keep: str) -> tuple[Step, ...]:
    """The steps needed for value ``keep``, with the release lists recomputed for them."""
    needed, chosen = {keep}, []
    for step in reversed(steps):
        if needed.intersection(step.outputs):
            chosen.append(step)
            needed.update(step.inputs)
    chosen.reverse()
    last_use = {v: i for i, s in enumerate(chosen) for v in s.inputs}
    out = []
    for i, s in enumerate(chosen):
        release = tuple(dict.fromkeys(v for v in s.inputs if last_use[v] == i and v != keep))
        unused = tuple(v for v in s.outputs if v not in last_use and v != keep)
        out.append(Step(s.module, s.inputs, s.outputs, release + unused))
    return tuple(out)


def prepare(module: CaffeNet, num_classes: int, head: str | None = None, freeze: FreezeSpec = "all-but-head",
            softmax: bool = False) -> CaffeNet:
    """Make a converted net (``caffe2x.to_torch(graph, trainable=True)``) ready to fine-tune, in place.

    - ``head`` (Caffe layer name, default: the last InnerProduct) is replaced by a fresh InnerProduct with
      ``num_classes`` outputs (weights N(0, 0.01²), bias 0); every other layer keeps its pretrained values.
    - The module then returns the head's output (logits, what ``nn.CrossEntropyLoss`` wants), or with
      ``softmax=True`` the output of the Softmax layer that follows the head. Layers after it are dropped.
    - ``freeze``: see :mod:`caffe2x.finetune`. Frozen parameters get ``requires_grad=False``; frozen
      BatchNorm layers keep the stored statistics even under ``module.train()``. The rest requires grad.

    Returns ``module``. Unknown layer names raise :class:`Caffe2xError` listing close matches.
    """
    if not isinstance(module, CaffeNet):
        raise Caffe2xError(f"prepare() takes a module from caffe2x.to_torch, got {type(module).__name__}")
    if int(num_classes) < 1:
        raise Caffe2xError(f"num_classes must be at least 1, got {num_classes}")
    order = _layer_order(module)
    attr = {caffe: mod for mod, caffe in module.caffe_names.items()}
    linear = [n for n in order if isinstance(getattr(module, attr[n]), nn.Linear)]
    if head is None:
        if not linear:
            raise Caffe2xError("the net has no InnerProduct layer to replace; name the head explicitly")
        head = linear[-1]
    head = resolve_layer(head, order, "head layer")
    old = getattr(module, attr[head])
    if not isinstance(old, nn.Linear):
        raise Caffe2xError(f"head {head!r} is a {type(old).__name__}, not an InnerProduct"
                           + (f"; InnerProduct layers: {', '.join(linear)}" if linear else ""))
    new = CaffeInnerProduct(old.in_features, int(num_classes), bias=True, axis=getattr(old, "axis", 1))
    with torch.no_grad():
        new.weight.normal_(0.0, HEAD_INIT_STD)
        new.bias.zero_()
    setattr(module, attr[head], new.to(old.weight.device))

    head_step = next(s for s in module.steps if s.module == attr[head])
    out_value, out_name = head_step.outputs[0], head
    if softmax:
        nxt = [s for s in module.steps if s.inputs == (out_value,) and isinstance(getattr(module, s.module), nn.Softmax)]
        if not nxt:
            raise Caffe2xError(f"softmax=True but no Softmax layer reads the head {head!r}'s output")
        out_value, out_name = nxt[0].outputs[0], module.caffe_names[nxt[0].module]
    module.steps = _replan(module.steps, out_value)
    kept = {s.module for s in module.steps}
    for mod in [m for m in module.caffe_names if m not in kept]:
        delattr(module, mod)                      # layers after the output (the old Softmax ...)
        del module.caffe_names[mod]
    module.output_values, module.output_names, module.single_output = (out_value,), (out_name,), True
    module.rebuild()

    frozen = set(frozen_layers(freeze, [n for n in order if attr[n] in kept], head))
    for mod, caffe in module.caffe_names.items():
        sub = getattr(module, mod)
        sub.requires_grad_(caffe not in frozen)
        for m in sub.modules():
            if hasattr(m, "frozen"):              # trainable BatchNorm: stored statistics when frozen
                m.frozen = caffe in frozen
    return module


# =========================================================================== preprocessing
class CaffePreprocess(nn.Module):
    """Caffe's input pipeline as a module: RGB ``uint8`` images ``(N, 3, H, W)`` (or one ``(3, H, W)``, as
    ``torchvision.io.read_image`` gives) in, the net's float32 ``(N, 3, height, width)`` input out --
    shorter side resized to ``resize`` (default 256 for 224..256 crops), crop, RGB->BGR, 0..255, mean
    subtracted (``mean``: a ``.binaryproto`` path or a (3, H, W) array; or ``mean_values`` in BGR order;
    default B 103.94, G 116.78, R 123.68).

    In ``eval()`` mode the crop is the centre (the validator's numbers, to float rounding). In ``train()``
    mode, ``random_crop=True`` draws each image's crop offset uniformly and ``mirror=True`` flips half of
    them left-right, as Caffe's ``transform_param`` (``crop_size`` in TRAIN, ``mirror: true``) did; both
    use torch's random generator, so ``torch.manual_seed`` makes them repeatable. Images in one batch must
    share a size (use :class:`CaffeTransform` per image otherwise). Not differentiable w.r.t. the image.
    """

    def __init__(self, height: int = 224, width: int = 224, mean: str | os.PathLike[str] | np.ndarray | None = None,
                 mean_values: Sequence[float] | None = None, resize: int | None = None, random_crop: bool = False,
                 mirror: bool = False) -> None:
        super().__init__()
        self.height, self.width, self.resize = int(height), int(width), resize
        self.mean = pp.Mean.resolve(mean, mean_values)
        self.random_crop, self.mirror = bool(random_crop), bool(mirror)

    def extra_repr(self) -> str:
        return (f"{self.height}x{self.width}, resize={self.resize or pp.resize_size(self.height, self.width)}, "
                f"mean={self.mean.describe()}, random_crop={self.random_crop}, mirror={self.mirror}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        x = images[None] if single else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise Caffe2xError(f"expected RGB images (N, 3, H, W) or (3, H, W), got {list(images.shape)}")
        n, _, in_h, in_w = x.shape
        g = pp.geometry(int(in_h), int(in_w), self.height, self.width, self.resize)
        dev = x.device
        tops, lefts, flips = self._windows(n, g, dev)
        rows_i = tops[:, None] + torch.arange(self.height, device=dev)
        cols_i = lefts[:, None] + torch.arange(self.width, device=dev)
        cols_i = torch.where(flips[:, None], cols_i.flip(1), cols_i)
        rows = torch.from_numpy(g.rows).to(dev)[rows_i]               # (N, h, H)
        cols = torch.from_numpy(g.cols).to(dev)[cols_i]               # (N, w, W)
        bgr = x.flip(1).to(torch.float32)
        y = torch.matmul(torch.matmul(rows[:, None], bgr), cols[:, None].transpose(-1, -2))
        mean, follows = self.mean.for_crop(g.resized, g.crop)
        m = torch.from_numpy(mean).to(dev)
        if follows:                       # a resized-size mean image, indexed at each image's window
            m = m[:, rows_i[:, :, None], cols_i[:, None, :]].transpose(0, 1)
        y = y - m
        return y[0] if single else y

    def _windows(self, n: int, g: pp.Geometry, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image crop offsets and mirror flags: the centre in eval mode, random draws in training."""
        top, left = g.centre
        tops = torch.full((n,), top, dtype=torch.long)
        lefts = torch.full((n,), left, dtype=torch.long)
        flips = torch.zeros(n, dtype=torch.bool)
        if self.training and self.random_crop:
            max_top, max_left = g.max_offset
            tops = torch.randint(0, max_top + 1, (n,))
            lefts = torch.randint(0, max_left + 1, (n,))
        if self.training and self.mirror:
            flips = torch.rand(n) < 0.5
        return tops.to(dev), lefts.to(dev), flips.to(dev)


class CaffeTransform:
    """A torchvision-style transform (``dataset = ImageFolder(root, transform=CaffeTransform())`` works
    without torchvision too): one image -- a Pillow image, an ``(H, W, 3)``/``(H, W)`` uint8 numpy array,
    or a ``(3, H, W)`` uint8 tensor, RGB -- to the net's float32 ``(3, height, width)`` input.

    Same arguments as :class:`CaffePreprocess`; ``train=True`` enables its random crop / mirror.
    """

    def __init__(self, height: int = 224, width: int = 224, *, train: bool = False, **kwargs: Any) -> None:
        self.module = CaffePreprocess(height, width, **kwargs).train(train)

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            t = image
        else:
            arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise Caffe2xError(f"expected an RGB image (H, W, 3), got shape {list(arr.shape)}")
            t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        with torch.no_grad():
            return self.module(t)

    def __repr__(self) -> str:
        return f"CaffeTransform({self.module.extra_repr()}, train={self.module.training})"
