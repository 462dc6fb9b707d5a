"""Write output files atomically: a reader never sees a half-written file.

Every target writes through :func:`atomic_output`, which hands out a temporary path in the destination
directory and renames it over the destination only when the writer finished without raising.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import Caffe2xError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on failure delete it.

    The temporary name keeps the destination's suffix, since some writers (Keras) pick the format by it.

    The temporary file lives in the same directory so that the final ``os.replace`` is atomic (same
    filesystem). An unwritable destination is reported as a :class:`Caffe2xError` before any work.
    """
    dest = Path(path)
    directory = dest.parent if str(dest.parent) else Path(".")
    if not directory.is_dir():
        raise Caffe2xError(f"cannot write {dest}: directory {directory} does not exist")
    if dest.is_dir():
        raise Caffe2xError(f"cannot write {dest}: it is a directory")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=directory)
    except OSError as exc:
        raise Caffe2xError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise Caffe2xError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
