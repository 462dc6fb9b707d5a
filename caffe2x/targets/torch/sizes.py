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
from typing import List, Optional, Tuple

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
def _symbolic(*sizes: object) -> bool:
    """Whether any size is symbolic (``torch.export`` / ``torch.compile`` with dynamic dims): checks on
    it are then ``torch._check`` assertions, not Python ``if``s that would specialise the size."""
    return any(isinstance(v, torch.SymInt) for v in sizes)


@torch.jit.unused
def _not_checkable(t: torch.Tensor) -> bool:
    """Whether ``t``'s values cannot be read here: traced, compiled or exported (a value check there
    would be data-dependent control flow)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting or not t.numel()


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
    if _symbolic(*x.shape):  # torch.export / compile with dynamic dims: Caffe's rule, never a guard
        return True
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
def _symbolic_batch(x: torch.Tensor, ruled: List[int]) -> List[int]:
    """With a symbolic batch, a rule's fixed first dim that the read shape kept as the batch follows
    the input, as it does at any concrete size (where the read shape applies)."""
    return [x.shape[0]] + ruled[1:] if _symbolic(x.shape[0]) else ruled


@torch.jit.unused
def _check_rule_eager(x: torch.Tensor, ruled: List[int], dims: List[int], start: int, layer: str) -> None:
    if torch.jit.is_tracing() or _symbolic(*x.shape):
        return  # traced or symbolic sizes: reshape itself refuses what does not fit
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
    if not torch.jit.is_scripting() and keep_batch and start == 0 and len(dims) > 0 and dims[0] > 0:
        ruled = _symbolic_batch(x, ruled)
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



@torch.jit.unused
def _interp_size_eager(x: torch.Tensor, like: Optional[torch.Tensor], shrink: int, zoom: int, height: int, width: int,
                       pad_beg: int, pad_end: int, layer: str) -> List[int]:
    eff = [x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end]  # traced tensors under jit.trace
    if _symbolic(*eff):
        torch._check(eff[0] > 0 and eff[1] > 0, lambda: f"layer {layer!r} (Interp): cropping leaves no input")
    elif not torch.jit.is_tracing() and min(eff) <= 0:
        raise InputSizeError(f"layer {layer!r} (Interp): cropping {-pad_beg} and {-pad_end} leaves no input of "
                             f"{x.shape[2]}x{x.shape[3]}")
    if shrink and not zoom:
        out = [(e - 1) // shrink + 1 for e in eff]
    elif zoom and not shrink:
        out = [e + (e - 1) * (zoom - 1) for e in eff]
    elif height and width:
        out = [height, width]
    elif shrink and zoom:
        out = [(e - 1) // shrink + 1 for e in eff]
        out = [s + (s - 1) * (zoom - 1) for s in out]
    elif like is not None:
        out = [like.shape[2], like.shape[3]]
    else:
        raise InputSizeError(f"layer {layer!r} (Interp) takes its size from a second input")
    return eff + out


@torch.fx.wrap
def interp_size(x: torch.Tensor, like: Optional[torch.Tensor], shrink: int, zoom: int, height: int, width: int,
                pad_beg: int, pad_end: int, layer: str) -> List[int]:
    """``[in_h, in_w, out_h, out_w]``: the cropped input's size and Interp's output size by Caffe's
    ``InterpLayer::Reshape`` rule, in its order of precedence (shrink only, zoom only, explicit height
    and width, shrink then zoom, the second input's size; 0 = not set). Traced sizes stay traced."""
    if not torch.jit.is_scripting():
        return _interp_size_eager(x, like, shrink, zoom, height, width, pad_beg, pad_end, layer)
    eh, ew = x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end
    if eh <= 0 or ew <= 0:
        raise InputSizeError("layer " + layer + " (Interp): cropping leaves no input of " + str(x.shape[2]) + "x"
                             + str(x.shape[3]))
    if shrink > 0 and zoom == 0:
        return [eh, ew, (eh - 1) // shrink + 1, (ew - 1) // shrink + 1]
    if zoom > 0 and shrink == 0:
        return [eh, ew, eh + (eh - 1) * (zoom - 1), ew + (ew - 1) * (zoom - 1)]
    if height > 0 and width > 0:
        return [eh, ew, height, width]
    if shrink > 0 and zoom > 0:
        sh, sw = (eh - 1) // shrink + 1, (ew - 1) // shrink + 1
        return [eh, ew, sh + (sh - 1) * (zoom - 1), sw + (sw - 1) * (zoom - 1)]
    if like is None:
        raise InputSizeError("layer " + layer + " (Interp) takes its size from a second input")
    return [eh, ew, like.shape[2], like.shape[3]]


@torch.jit.unused
def _interp_positions(src: int, dst: int) -> torch.Tensor:
    if isinstance(dst, torch.Tensor):  # under jit.trace: int64 tensors, divided in float32 as Caffe does
        return torch.arange(dst, dtype=torch.float32) * ((src - 1) / (dst - 1).clamp(min=1))
    # float(a) / b rounded to float32 equals float32 division: double rounding is innocuous for a quotient
    return torch.arange(dst, dtype=torch.float32) * ((src - 1) / (dst - 1) if dst > 1 else 0.0)


@torch.fx.wrap
def interp_axis(src: int, dst: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis, per output position: (index, next index, weight of index, weight of next), as
    Caffe's ``caffe_cpu_interp2`` (float32 ``r = (src - 1) / (dst - 1)``, ``pos = r * i`` truncated)."""
    if torch.jit.is_scripting():
        r = float(src - 1) / float(dst - 1) if dst > 1 else 0.0
        pos = torch.arange(dst, dtype=torch.float32) * r
    else:
        pos = _interp_positions(src, dst)
    i0 = pos.long()
    i1 = i0 + (i0 < src - 1).long()
    lam1 = pos - i0.to(torch.float32)
    return i0, i1, 1 - lam1, lam1


@torch.jit.unused
def _unpool_mask_eager(idx: torch.Tensor, height: int, width: int, layer: str) -> None:
    if _not_checkable(idx):  # traced or exported: a value check cannot be recorded
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= height * width:
        raise InputSizeError(f"layer {layer!r} (Upsample): mask index {low if low < 0 else high} is outside the "
                             f"{height}x{width} output")


@torch.fx.wrap
def check_unpool_mask(idx: torch.Tensor, height: int, width: int, layer: str) -> torch.Tensor:
    """``idx`` itself, after checking that every mask index falls in the ``height`` x ``width`` plane
    (Caffe's ``UpsampleLayer`` CHECK): a mask from a larger input, or an explicit plane too small."""
    if torch.jit.is_scripting():
        if idx.numel() > 0:
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= height * width:
                raise InputSizeError("layer " + layer + " (Upsample): mask index outside the " + str(height) + "x"
                                     + str(width) + " output")
    else:
        _unpool_mask_eager(idx, height, width, layer)
    return idx


@torch.jit.unused
def _top_k_eager(x: torch.Tensor, axis: int, top_k: int, layer: str) -> None:
    if torch.jit.is_tracing():
        return
    size = x.shape[axis] if axis >= 0 else x[0].numel()
    if _symbolic(size):
        torch._check(size >= top_k, lambda: f"layer {layer!r} (ArgMax): top_k {top_k} takes at least {top_k} values")
    elif size < top_k:
        where = f"along axis {axis}" if axis >= 0 else "per sample"
        raise InputSizeError(f"layer {layer!r} (ArgMax): top_k {top_k} takes at least {top_k} values {where}, got {size}")


@torch.fx.wrap
def check_top_k(x: torch.Tensor, axis: int, top_k: int, layer: str) -> torch.Tensor:
    """``x`` itself, after checking that it holds ``top_k`` values along ``axis`` (-1: per sample)."""
    if torch.jit.is_scripting():
        size = x.shape[axis] if axis >= 0 else x[0].numel()
        if size < top_k:
            raise InputSizeError("layer " + layer + " (ArgMax): top_k " + str(top_k) + " takes at least " + str(top_k)
                                 + " values, got " + str(size))
    else:
        _top_k_eager(x, axis, top_k, layer)
    return x


@torch.jit.unused
def _embed_index_eager(index: torch.Tensor, input_dim: int, layer: str) -> None:
    if _not_checkable(index):
        return
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= input_dim:
        raise InputSizeError(f"layer {layer!r} (Embed): input must hold integers in 0..{input_dim - 1}, got "
                             f"{low if low < 0 else high}")


@torch.fx.wrap
def check_embed_index(index: torch.Tensor, input_dim: int, layer: str) -> torch.Tensor:
    """``index`` itself, after checking that it picks rows of an ``input_dim``-row table."""
    if torch.jit.is_scripting():
        if index.numel() > 0:
            low, high = int(index.min()), int(index.max())
            if low < 0 or high >= input_dim:
                raise InputSizeError("layer " + layer + " (Embed): input must hold integers in 0.." + str(input_dim - 1))
    else:
        _embed_index_eager(index, input_dim, layer)
    return index

#: the checks and size helpers that generated code may call, each with the eager helpers it calls
#: (copied into ``--emit-code`` output in this order)
GENERATED_HELPERS = {
    "check_min_size": ("_min_size_eager",),
    "check_crop": ("_crop_eager",),
    "reshape_size": ("_symbolic", "_concrete_dims", "_reshape_uses_rule", "_symbolic_batch", "_check_rule_eager"),
    "interp_size": ("_symbolic", "_interp_size_eager"),
    "interp_axis": ("_interp_positions",),
    "check_unpool_mask": ("_not_checkable", "_unpool_mask_eager"),
    "check_top_k": ("_symbolic", "_top_k_eager"),
    "check_embed_index": ("_not_checkable", "_embed_index_eager"),
}
