"""Small numeric helpers shared by the reader, the targets and the validator: rounding to reduced
precisions and the error measures every caffe2x tolerance is stated in."""
from __future__ import annotations

import functools

import numpy as np

from caffe2x.errors import Caffe2xError


@functools.cache
def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, remembered per dtype: numpy builds the name in Python on every access (~2 us),
    and a safetensors header of ResNet-50's 268 tensors asks 800 times (1.5 ms of a 0.18 s convert)."""
    return dtype.name


@functools.cache
def dtype_text(dtype: np.dtype) -> str:
    """``str(dtype)`` (``'float32'``, ``'>f4'`` for a byte-swapped one), remembered per dtype like
    :func:`dtype_name`: a graph's JSON records it for every tensor."""
    return str(dtype)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even as torch and TF do."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` (float32 | float16 | bfloat16) and back to float32."""
    if dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return from_bfloat16_bits(to_bfloat16_bits(x))
    raise ValueError(dtype)


def max_rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``: the error measure every caffe2x tolerance is stated in."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def within(got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max abs error, max rel error = max|a-b|/max|ref|, whether max abs <= atol + rtol*max|ref|)."""
    a = np.asarray(got, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        raise Caffe2xError(f"shape {list(a.shape)} differs from the reference's {list(b.shape)}")
    if not a.size:
        return 0.0, 0.0, True
    diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    if not np.all(np.isfinite(a)):
        return float("nan"), float("nan"), False
    rel = diff / scale if scale > 0 else diff
    return diff, rel, diff <= atol + rtol * scale
