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

:func:`reshape_size` (Caffe's Reshape rule on the input's shape at run time) is wrapped the same way.
:func:`check_min_size`, :func:`check_crop` and :func:`reshape_size` are copied verbatim into ``--emit-code`` output, where
:class:`InputSizeError` is a ``ValueError`` defined by the generated file (it needs nothing but torch).
"""
from __future__ import annotations

import math
from typing import List

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



@torch.jit.unused
def _concrete_dims(x: torch.Tensor) -> List[int]:
    """``x``'s dims as ints, also under ``torch.jit.trace`` (where ``x.shape[i]`` is a traced tensor but
    ``torch.Size.numel`` a plain int)."""
    if not torch.jit.is_tracing():
        return list(x.shape)
    counts = [x.shape[i:].numel() for i in range(x.dim())] + [1]
    return [counts[i] // counts[i + 1] if counts[i + 1] else 0 for i in range(x.dim())]


@torch.jit.unused
def _reshape_uses_rule(x: torch.Tensor, shape: List[int], keep_batch: bool, start: int, count: int,
                       dims: List[int]) -> bool:
    """Whether the prototxt's rule shapes ``x``: when ``shape`` (batch following ``x`` if ``keep_batch``)
    does not hold its values, and also when the rule gives that same shape, so that a module traced
    here keeps the rule's copied and inferred dims, not sizes fixed at trace time."""
    x_dims = _concrete_dims(x)
    out = [x_dims[0]] + shape[1:] if keep_batch else list(shape)
    n = math.prod(x_dims)
    if math.prod(out) != n:
        return True
    ruled = x_dims[:start] + [x_dims[start + i] if d == 0 else d for i, d in enumerate(dims)] + x_dims[start + count:]
    known = math.prod(d for d in ruled if d != -1)
    if -1 in ruled and known and n % known == 0:
        ruled[ruled.index(-1)] = n // known
    return ruled == out


@torch.jit.unused
def _check_rule_eager(x: torch.Tensor, ruled: List[int], dims: List[int], start: int, layer: str) -> None:
    if torch.jit.is_tracing():
        return  # traced sizes are tensors: reshape itself refuses what does not fit
    known = math.prod(d for d in ruled if d != -1)
    n = x.numel()
    if known == 0 or n % known or (-1 not in ruled and known != n):
        raise InputSizeError(f"layer {layer!r} (Reshape): an input shaped {list(x.shape)} cannot be shaped {dims} "
                             f"from axis {start}")


@torch.fx.wrap
def reshape_size(x: torch.Tensor, shape: List[int], keep_batch: bool, start: int, count: int, dims: List[int],
                 layer: str) -> List[int]:
    """The shape Caffe's Reshape gives ``x``: ``shape`` (read at the graph's size) with the batch
    following the input when ``keep_batch``; when that does not hold ``x``'s values and a rule is
    kept (``start`` >= 0), the prototxt's rule (``count`` axes from ``start`` replaced by ``dims``: 0
    copies the input's axis, one -1 is inferred), as the numpy reference does. Under ``torch.jit.trace``
    the sizes taken from ``x`` stay traced (which of the two applies is decided at trace time, the rule
    whenever it gives the same shape there)."""
    out = list(shape)
    if keep_batch:
        out[0] = x.shape[0]
    if start < 0:
        return out
    if torch.jit.is_scripting():
        kept = 1
        for d in out:
            kept = kept * d
        fits = kept == x.numel()
    else:
        fits = not _reshape_uses_rule(x, shape, keep_batch, start, count, dims)
    if fits:
        return out
    ruled: List[int] = []
    for i in range(start):
        ruled.append(x.shape[i])
    for i in range(len(dims)):
        ruled.append(x.shape[start + i] if dims[i] == 0 else dims[i])
    for i in range(start + count, x.dim()):
        ruled.append(x.shape[i])
    if torch.jit.is_scripting():
        known = 1
        for d in ruled:
            if d != -1:
                known = known * d
        n = x.numel()
        if known == 0 or n % known != 0 or (-1 not in ruled and known != n):
            raise InputSizeError("layer " + layer + " (Reshape): an input shaped " + str(x.shape) + " cannot be shaped "
                                 + str(dims) + " from axis " + str(start))
    else:
        _check_rule_eager(x, ruled, dims, start, layer)
    return ruled


#: the checks and size helpers that generated code may call, each with the eager helpers it calls
#: (copied into ``--emit-code`` output in this order)
GENERATED_HELPERS = {
    "check_min_size": ("_min_size_eager",),
    "check_crop": ("_crop_eager",),
    "reshape_size": ("_concrete_dims", "_reshape_uses_rule", "_check_rule_eager"),
}
