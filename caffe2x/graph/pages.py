"""Resident pages of mapped views: let a streaming writer drop what it has written.

A graph read from a caffemodel holds its weights as views of a private copy-on-write ``mmap`` of the
file (:mod:`caffe2x.caffe.wire`). Writing them out faults every page of the file into this process, so
a writer that keeps them all mapped peaks at the interpreter plus the whole file. :func:`release`
hands the pages of an already written range back to the kernel (``MADV_DONTNEED``): they stay in the
page cache and come back with a minor fault on the next access, so the arrays keep working unchanged.

A page this process has written to (a private copy) would be lost by ``MADV_DONTNEED`` and the file's
value would reappear, so nothing is dropped when any page of the range is private or when
``/proc/self/pagemap`` cannot tell (not Linux, no procfs): then the pages simply stay resident.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

_PRESENT = np.uint64(1 << 63)
_FILE_OR_SHARED = np.uint64(1 << 61)


def mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` an array is a view of, if any."""
    base: Any = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    return base if isinstance(base, mmap.mmap) else None


def release(arr: np.ndarray, mm: mmap.mmap | None = None) -> bool:
    """Drop the whole pages inside ``arr`` (a view of a mapped file) from the resident set.

    ``mm`` is ``mapping(arr)`` when the caller already has it. True when pages were dropped.
    """
    mm = mapping(arr) if mm is None else mm
    if mm is None or mm.closed or not arr.nbytes:
        return False
    page = mmap.PAGESIZE
    start = arr.__array_interface__["data"][0]
    first, last = -(-start // page), (start + arr.nbytes) // page  # pages wholly inside the view
    if last <= first:
        return False
    try:
        map_start = np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]
        offset = first * page - map_start
        if offset < 0 or offset + (last - first) * page > len(mm):
            return False
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), 8 * (last - first), 8 * first)
        entries = np.frombuffer(raw, dtype="<u8")
        if entries.size != last - first:
            return False
        if np.any((entries & _PRESENT).astype(bool) & ~(entries & _FILE_OR_SHARED).astype(bool)):
            return False  # a private (written) page: keep everything
        mm.madvise(mmap.MADV_DONTNEED, offset, (last - first) * page)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def release_map(mm: mmap.mmap) -> bool:
    """:func:`release` over the whole of a map (nothing dropped if any of its pages is private)."""
    try:
        return release(np.frombuffer(mm, dtype=np.uint8), mm)
    except (ValueError, TypeError):  # closed or empty
        return False


def release_all(arrays: Iterable[np.ndarray]) -> int:
    """:func:`release` of each array that is a view of a mapped file; how many had pages dropped.

    Array by array, not the whole map: a page this process wrote to keeps only its own array resident.
    Why: a process that has handed a graph's weights on (written them to a file, or copied them into a
    framework's own buffers) keeps the graph for later reads only; its file pages need not stay
    counted in its memory while it waits or while a framework runs."""
    return sum(1 for arr in arrays if isinstance(arr, np.ndarray) and release(arr))
