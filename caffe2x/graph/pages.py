"""Resident pages of mapped views: let a streaming writer drop what it has written.

A graph read from a caffemodel holds its weights as views of a private copy-on-write ``mmap`` of the
file (:mod:`caffe2x.caffe.wire`). Writing them out faults every page of the file into this process, so
a writer that keeps them all mapped peaks at the interpreter plus the whole file. :func:`release`
hands the pages of an already written range back to the kernel (``MADV_DONTNEED``): they stay in the
page cache and come back with a minor fault on the next access, so the arrays keep working unchanged.

A page this process has written to (a private copy) would be lost by ``MADV_DONTNEED`` and the file's
value would reappear, so nothing is dropped when any page of the range is private or when
``/proc/self/pagemap`` cannot tell (not Linux, no procfs): then the pages simply stay resident.

The same test says when a view still shows the file's own bytes: then a writer may read them from the
file itself (:func:`file_span`) rather than fault every page of the map into this process.
"""
from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

_PRESENT = np.uint64(1 << 63)
_SWAPPED = np.uint64(1 << 62)
_FILE_OR_SHARED = np.uint64(1 << 61)


class FileMap(mmap.mmap):
    """A private copy-on-write map of a whole file that keeps the file open (``fd``, closed when the
    map is collected, which is when the last view of it goes).

    Why the descriptor: a writer copying a view's bytes out can then read them from ``fd`` at
    :func:`file_span`'s offset into a small buffer instead of faulting each page of the map into this
    process (ResNet-50's 98 MiB to safetensors: 0.07-0.09 s through the map, 0.04 s from the file).
    The open descriptor is the file that was mapped, even if its path is replaced meanwhile.
    """

    fd: int


def map_file(path: str | os.PathLike[str]) -> FileMap:
    """A :class:`FileMap` of ``path`` (``OSError``/``ValueError`` as ``mmap``: missing, empty, a directory)."""
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        mm = FileMap(fd, 0, access=mmap.ACCESS_COPY)
    except BaseException:
        os.close(fd)
        raise
    mm.fd = fd
    weakref.finalize(mm, os.close, fd)
    return mm


def mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` an array is a view of, if any."""
    base: Any = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    return base if isinstance(base, mmap.mmap) else None


def _start(mm: mmap.mmap) -> int:
    """The address of the map's first byte (``ValueError``/``TypeError`` when it is closed or empty)."""
    return np.frombuffer(mm, dtype=np.uint8, count=1).__array_interface__["data"][0]


def _private_pages(mm: mmap.mmap, offset: int, count: int) -> bool | None:
    """Whether any of ``count`` pages of ``mm`` from byte ``offset`` (page-aligned) is this process's own
    copy (written since mapping: present or swapped out, and not the file's page); None when
    ``/proc/self/pagemap`` cannot tell."""
    try:
        map_start = _start(mm)
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            raw = os.pread(f.fileno(), 8 * count, 8 * ((map_start + offset) // mmap.PAGESIZE))
    except (OSError, ValueError, TypeError):
        return None
    entries = np.frombuffer(raw, dtype="<u8")
    if entries.size != count:
        return None
    return bool(np.any(((entries & (_PRESENT | _SWAPPED)) != 0) & ((entries & _FILE_OR_SHARED) == 0)))


def unwritten(mm: mmap.mmap) -> bool:
    """True when no page of the map is a private copy: every view of it shows the file's own bytes."""
    if mm.closed or not len(mm):
        return False
    return _private_pages(mm, 0, -(-len(mm) // mmap.PAGESIZE)) is False


def file_span(arr: np.ndarray, mm: mmap.mmap | None = None) -> tuple[int, int] | None:
    """``(fd, offset)``: where in an open file the bytes of ``arr`` are, when ``arr`` is a C-contiguous
    view of a :class:`FileMap` (``mm``, when the caller has it); else None.

    The caller checks :func:`unwritten` first: a view with a written page no longer shows the file.
    """
    mm = mapping(arr) if mm is None else mm
    if not isinstance(mm, FileMap) or mm.closed or not arr.flags.c_contiguous or not arr.nbytes:
        return None
    try:
        offset = arr.__array_interface__["data"][0] - _start(mm)
    except (ValueError, TypeError):
        return None
    if offset < 0 or offset + arr.nbytes > len(mm):
        return None
    return mm.fd, offset


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
        offset = first * page - _start(mm)
        if offset < 0 or offset + (last - first) * page > len(mm):
            return False
        if _private_pages(mm, offset, last - first) is not False:
            return False  # a private (written) page, or no way to tell: keep everything
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
