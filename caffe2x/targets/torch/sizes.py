"""Input-size checks of the torch modules that every tracer keeps.

A converted module runs at any input size the net takes, as a reshaped Caffe net does. A size it cannot
take (ResNet-50 at 160x160 reaches ``pool5`` with a 5x5 map for a 7x7 window) is an
:class:`InputSizeError` naming the layer and the sizes it accepts, before torch's own "Output size is too
small". The check is one function, :func:`check_min_size`, that works in every mode a module is used in:

* eager (and ``torch.jit.trace``, at trace time): a plain comparison that raises :class:`InputSizeError`;
* ``torch.fx.symbolic_trace``: the function is ``torch.fx.wrap``-ped, so the traced graph calls it (and
  the check runs whenever the ``GraphModule`` does) instead of failing on a Proxy in an ``if``;
* ``torch.jit.script``: compiled like any function (the error surfaces as ``torch.jit.Error``);
* ``torch.export`` / ``torch.compile`` with dynamic sizes: ``torch._check``, a runtime assertion that
  also tells the compiler the size range (no Python ``if`` on a symbolic size).

:func:`check_min_size` and :func:`check_crop` are copied verbatim into ``--emit-code`` output, where
:class:`InputSizeError` is a ``ValueError`` defined by the generated file (it needs nothing but torch).
"""
from __future__ import annotations

import torch

from caffe2x.errors import Caffe2xError


class InputSizeError(Caffe2xError, ValueError):
    """An input a converted torch module cannot take (a spatial map smaller than a layer's window, a
    blob smaller than a Crop's reference); the message names the layer and the sizes it accepts."""


@torch.jit.unused
def _min_size_eager(x: torch.Tensor, min_h: int, min_w: int, layer: str) -> None:
    h, w = x.shape[-2], x.shape[-1]
    if isinstance(h, int) and isinstance(w, int):
        if h < min_h or w < min_w:
            raise InputSizeError(f"layer {layer!r} takes an input of at least {min_h}x{min_w}, got {h}x{w}")
    else:  # symbolic sizes (torch.export, torch.compile): an assertion the compiler understands
        torch._check(h >= min_h, lambda: f"layer {layer!r} takes an input of at least {min_h} rows")
        torch._check(w >= min_w, lambda: f"layer {layer!r} takes an input of at least {min_w} columns")


@torch.fx.wrap
def check_min_size(x: torch.Tensor, min_h: int, min_w: int, layer: str) -> torch.Tensor:
    """``x`` itself, after checking that its last two dims are at least ``min_h`` x ``min_w``."""
    if torch.jit.is_scripting():
        if x.shape[-2] < min_h or x.shape[-1] < min_w:
            raise InputSizeError("layer " + layer + " takes an input of at least " + str(min_h) + "x"
                                 + str(min_w) + ", got " + str(x.shape[-2]) + "x" + str(x.shape[-1]))
    elif not torch.jit.is_tracing():  # a traced size is a tensor: the check could not be recorded anyway
        _min_size_eager(x, min_h, min_w, layer)
    return x


@torch.jit.unused
def _crop_eager(x: torch.Tensor, reference: torch.Tensor, axis: int, offsets: list[int], layer: str) -> None:
    for i in range(axis, len(offsets)):
        size, want = x.shape[i], reference.shape[i]
        if isinstance(size, int) and isinstance(want, int):
            if size < offsets[i] + want:
                raise InputSizeError(f"layer {layer!r}: axis {i} of size {size} cannot be cropped to {want} "
                                     f"from offset {offsets[i]}")
        else:
            torch._check(size >= offsets[i] + want, lambda: f"layer {layer!r}: crop outside its input")


@torch.fx.wrap
def check_crop(x: torch.Tensor, reference: torch.Tensor, axis: int, offsets: list[int], layer: str) -> torch.Tensor:
    """``x`` itself, after checking that it holds ``reference``'s size from ``offsets`` on, along every
    axis from ``axis`` (Caffe's Crop condition)."""
    if torch.jit.is_scripting():
        for i in range(axis, len(offsets)):
            if x.shape[i] < offsets[i] + reference.shape[i]:
                raise InputSizeError("layer " + layer + ": axis " + str(i) + " of size " + str(x.shape[i])
                                     + " cannot be cropped to " + str(reference.shape[i]) + " from offset "
                                     + str(offsets[i]))
    elif not torch.jit.is_tracing():
        _crop_eager(x, reference, axis, offsets, layer)
    return x
