"""Bounded reading of artifacts: look at what a file declares before letting a loader allocate it.

A 1.5 MB ``.pt`` whose compressed storage inflates to 1.5 GB, or a 115 KB ``.h5`` holding a sparse
30000 x 30000 dataset, costs gigabytes once a loader believes it. Each check here reads only the
file's directory (zip central directory, HDF5 object headers), never the payload, and compares the
declared bytes with what the graph needs (an artifact of a net holds that net's tensors, a few times
over at most) and with the size limit of :mod:`caffe2x.graph.checks`. Frameworks are not imported here:
``zipfile`` reads a torch archive and ``h5py`` (only) an HDF5 file.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from caffe2x.errors import Caffe2xError
from caffe2x.graph.checks import MAX_BYTES_ENV, SizeLimitError, human, max_bytes

#: an artifact may declare this many times the graph's float32 tensor bytes (plus SLACK) before it is
#: refused: optimiser state or a float64 copy would fit, a decompression bomb would not
EXPECTED_FACTOR = 4
SLACK = 16 << 20
#: compressed zip entries may inflate this much (torch stores tensors uncompressed, ratio 1)
MAX_RATIO = 100


def graph_bytes(graph: Any) -> int:
    """Bytes of a graph's tensors as float32: what an artifact of it is expected to hold."""
    return int(sum(t.size for t in graph.tensors.values())) * 4


def budget(expected_bytes: int | None) -> int:
    """The bytes an artifact may declare: the size limit, or less when the graph says what to expect."""
    cap = max_bytes()
    if expected_bytes is not None:
        cap = min(cap, EXPECTED_FACTOR * int(expected_bytes) + SLACK)
    return cap


def _refuse(path: Path, what: str, nbytes: int, cap: int) -> SizeLimitError:
    return SizeLimitError(f"{path.name}: {what} declares {human(nbytes)}, over the {human(cap)} this artifact "
                          f"may hold (its net's tensors x{EXPECTED_FACTOR}, at most the {MAX_BYTES_ENV} limit)")


def check_zip_archive(path: str | os.PathLike[str], expected_bytes: int | None = None) -> None:
    """A ``.pt`` (zip) archive: declared entry sizes within :func:`budget`, compressed entries not
    inflating more than :data:`MAX_RATIO` times. Checked from the central directory only."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except zipfile.BadZipFile:
        return  # not a zip (a legacy pickle .pt): the loader's own error names it
    except (OSError, ValueError, EOFError) as exc:
        raise Caffe2xError(f"{p.name}: cannot read the archive directory: {exc}") from None
    cap = budget(expected_bytes)
    total = 0
    for info in infos:
        if info.file_size < 0 or info.compress_size < 0:
            raise Caffe2xError(f"{p.name}: archive entry {info.filename!r} declares a negative size")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise SizeLimitError(f"{p.name}: archive entry {info.filename!r} inflates {info.compress_size:,} bytes "
                                 f"to {info.file_size:,} (more than {MAX_RATIO}x); refusing to decompress it")
        total += info.file_size
        if total > cap:
            raise _refuse(p, f"archive ({len(infos)} entries)", total, cap)


def check_h5(path: str | os.PathLike[str], expected_bytes: int | None = None) -> None:
    """An HDF5 file: every dataset numeric, the sum of shape x itemsize within :func:`budget`.

    Reads object headers only (``h5py`` datasets are lazy); a sparse 30000 x 30000 dataset is refused
    by its declared 3.4 GB, not by reading it.
    """
    import h5py

    p = Path(path)
    cap = budget(expected_bytes)
    total = 0
    problem: list[str] = []

    def visit(name: str, obj: Any) -> None:
        nonlocal total
        if problem or not isinstance(obj, h5py.Dataset):
            return
        kind = obj.dtype.kind
        if kind not in "biuf":
            problem.append(f"{p.name}: dataset {name!r} holds {obj.dtype} data, not numbers")
            return
        n = 1
        for d in obj.shape or ():
            n *= int(d)
        total += n * obj.dtype.itemsize
        if total > cap:
            problem.append("size")

    try:
        with h5py.File(p, "r") as f:
            f.visititems(visit)
    except OSError as exc:
        raise Caffe2xError(f"{p.name} is not a readable HDF5 file: {str(exc).splitlines()[0]}") from None
    if problem and problem[0] == "size":
        raise _refuse(p, "HDF5 datasets", total, cap)
    if problem:
        raise Caffe2xError(problem[0])
