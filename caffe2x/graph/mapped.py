"""Handing back the resident pages of arrays that are views of a mapped file (the caffemodel's weights,
:func:`caffe2x.caffe.wire.map_file`) once a writer has copied them.

Why: a view's pages become resident as a writer reads them and stay in the process (its RSS) until the
mapping goes, although a writer that copies each weight into its framework's own buffers (Keras'
variables) never reads them again: converting ResNet-50 to Keras held its 98 MiB of caffemodel pages
beside the variables' 98 MiB. ``madvise(MADV_PAGEOUT)`` asks the kernel to reclaim them now.

Nothing is lost and no array changes: the mapping stays, an untouched page is read again from the file
if anything accesses it later (a page some array wrote to is private anonymous memory, which the
kernel keeps, or swaps out, but never drops), and the kernel skips pages another process also maps.
Where the call does not exist (not Linux, a kernel before 5.4) this is a no-op.
"""
from __future__ import annotations

import mmap
import sys
from collections.abc import Iterable

import numpy as np

#: ``MADV_PAGEOUT`` (Linux 5.4+; Python's mmap module names it from 3.12 on)
PAGEOUT: int | None = getattr(mmap, "MADV_PAGEOUT", 21 if sys.platform.startswith("linux") else None)


def mapping_of(arr: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The ``mmap`` an array is a view of and the offset of the array's first byte in it, or None."""
    base: object = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if not (isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)) or len(base.obj) == 0:
        return None
    start = np.frombuffer(base.obj, np.uint8, count=1).ctypes.data  # the map's first byte
    offset = arr.ctypes.data - start
    return (base.obj, offset) if 0 <= offset < len(base.obj) else None


def release(arrays: Iterable[np.ndarray]) -> int:
    """Ask the kernel to reclaim the pages of each array that is a view of a mapped file (the pages its
    bytes touch, whole); return how many bytes were asked for. Other arrays are left alone."""
    if PAGEOUT is None:
        return 0
    asked = 0
    for arr in arrays:
        if not isinstance(arr, np.ndarray) or arr.nbytes == 0:
            continue
        found = mapping_of(arr)
        if found is None:
            continue
        mm, offset = found
        lo = offset + sum(s * (n - 1) for s, n in zip(arr.strides, arr.shape) if s < 0)
        hi = offset + arr.itemsize + sum(s * (n - 1) for s, n in zip(arr.strides, arr.shape) if s > 0)
        start = lo - lo % mmap.PAGESIZE
        stop = min(len(mm), hi)
        if stop <= start:
            continue
        try:
            mm.madvise(PAGEOUT, start, stop - start)
        except (OSError, ValueError):  # not supported here: the pages stay, as without this call
            return asked
        asked += stop - start
    return asked
