"""Write output files so that nothing the user had is lost and nothing half-written is left.

Every file caffe2x writes goes through :func:`atomic_output`, which hands out a temporary path in the
destination directory and renames it over the destination only when the whole block ran:

- **nothing lost**: an existing destination is never replaced unless ``overwrite`` (``--force``); when
  the new bytes equal the existing file's, the file is simply left as it is (running the same command
  twice is fine). :func:`refuse_collisions` refuses an output that is also an input of the run.
- **nothing left**: the temporary file is removed on any exception, on SIGINT and on SIGTERM (a
  handler is installed for the duration of the block, chaining to the previous one), and a signal that
  some library swallowed still aborts the rename.
- **full disk**: ``ENOSPC`` however a writer reports it (OSError, torch's RuntimeError, safetensors'
  error) becomes a :class:`~caffe2x.errors.Caffe2xError` naming the path; the previous file at the
  destination stays intact because it is only ever replaced by a rename.
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from caffe2x.errors import Caffe2xError, option


class OutputExistsError(Caffe2xError):
    """The destination exists, differs from the new output, and overwriting was not asked for."""


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException like KeyboardInterrupt, so cleanup code runs on the way out)."""


def output_path(path: Any, what: str = "output path") -> Path:
    """``path`` as a :class:`Path`, or a one-line error for bytes, None, ints and empty strings."""
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        if isinstance(text, str) and text:
            return Path(text)
    raise Caffe2xError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__} {path!r:.60}")


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name the same file (same inode when both exist, else the same absolute path)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def refuse_collisions(outputs: Iterable[tuple[str, Any]], inputs: Iterable[tuple[str, Any]]) -> None:
    """Refuse a run whose output path is one of its inputs (or another of its outputs).

    ``outputs``/``inputs`` are ``(role, path)`` pairs (``None`` paths are skipped); even ``--force``
    does not allow writing over an input: the run would destroy what it reads.
    """
    ins = [(role, Path(os.fspath(p))) for role, p in inputs if p is not None]
    seen: list[tuple[str, Path]] = []
    for role, p in outputs:
        if p is None:
            continue
        out = Path(os.fspath(p))
        for in_role, src in ins:
            if same_file(out, src):
                raise Caffe2xError(f"the {role} {out} is the {in_role} of this run; writing it would destroy "
                                   f"the input: choose another output path")
        for other_role, other in seen:
            if same_file(out, other):
                raise Caffe2xError(f"the {role} and the {other_role} are both {out}: give them different paths")
        seen.append((role, out))


#: every output this process renamed into place, in order: the CLI names the complete ones an
#: interrupt left behind
COMMITTED: list[Path] = []


@dataclass
class _Guard:
    """Signals seen while a temporary file was open.

    Inside :meth:`critical` (creating the temporary file and noting it, the rename, the removal) a signal
    is held instead of raised: an exception between ``mkstemp`` and the ``try`` that removes the file would
    leave it behind, and one inside the removal would skip it. :meth:`release` raises a held one at a point
    where the cleanup is sure to run.
    """

    received: int | None = None
    depth: int = 0
    held: int | None = None
    previous: dict[int, Any] | None = None

    def check(self) -> None:
        """Abort the rename if a signal arrived but its exception was swallowed by a library."""
        if self.received == signal.SIGTERM:
            raise Terminated()
        if self.received is not None:
            raise KeyboardInterrupt()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def release(self) -> None:
        """Raise the signal held during a critical section, as its handler would have."""
        signum, self.held = self.held, None
        if signum is None:
            return
        prev = (self.previous or {}).get(signum)
        if callable(prev):
            prev(signum, None)
        if signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()


@contextlib.contextmanager
def _signal_guard() -> Iterator[_Guard]:
    guard = _Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous: dict[int, Any] = {}
    guard.previous = previous

    def handler(signum: int, frame: FrameType | None) -> None:
        prev = previous.get(signum)
        if prev == signal.SIG_IGN:
            return
        guard.received = signum
        if guard.depth:
            guard.held = guard.held or signum
            return
        if callable(prev):
            prev(signum, frame)  # e.g. Python's default SIGINT handler: raises KeyboardInterrupt
        if signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            pass
    try:
        yield guard
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)


def same_content(new: Path, old: Path) -> bool:
    """The new output says exactly what the existing file says.

    Byte equality, except that PyTorch archives (zip) are compared member by member without the
    random ``serialization_id`` record torch.save adds to every file. Both comparisons stream in
    chunks: comparing two copies of a 500 MB model holds a few MB, not both files.
    """
    if filecmp.cmp(new, old, shallow=False):
        return True
    if new.suffix.lower() not in (".pt", ".pth"):
        return False
    return _same_zip_members(new, old)


#: bytes read from each side at a time when comparing archive members
_COMPARE_CHUNK = 1 << 20


def _same_zip_members(a: Path, b: Path) -> bool:
    """Two zip archives hold the same members (names without the top folder, torch's archive name)
    with the same contents, ``serialization_id`` aside; False for anything that is not a sane zip."""
    import zipfile

    def members(z: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo] | None:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > 2 * path.stat().st_size + (1 << 20):
            return None  # inflates far beyond its size (a stored torch archive never does)
        return {i.filename.split("/", 1)[-1]: i for i in infos if not i.filename.endswith("serialization_id")}

    try:
        with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
            ma, mb = members(za, a), members(zb, b)
            if ma is None or mb is None or ma.keys() != mb.keys():
                return False
            if any(ma[k].file_size != mb[k].file_size for k in ma):
                return False
            for key, info in ma.items():
                with za.open(info) as fa, zb.open(mb[key]) as fb:
                    while True:
                        chunk = fa.read(_COMPARE_CHUNK)
                        if chunk != fb.read(_COMPARE_CHUNK):
                            return False
                        if not chunk:
                            break
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return False
    return True


def disk_full(exc: BaseException, directory: Path) -> bool:
    """Whether ``exc`` (from any writer) means the disk ran out of space."""
    text = f"{exc} {getattr(exc, '__cause__', '') or ''}"
    if getattr(exc, "errno", None) == 28 or "No space left" in text or "os error 28" in text:
        return True
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 16


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = False, size_hint: int = 0) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block finishes, rename it to ``path``.

    The temporary name keeps the destination's suffix, since some writers (Keras) pick the format by it,
    and lives in the same directory so that the final ``os.replace`` is atomic (same filesystem). An
    unwritable destination is reported as a :class:`Caffe2xError` before any work. On any exception,
    SIGINT or SIGTERM the temporary file is deleted. If ``path`` exists and ``overwrite`` is false, an
    identical file is left untouched and a different one is kept with an :class:`OutputExistsError`.
    ``size_hint``: roughly how many bytes will be written; a disk with less free space is reported
    before writing (some writers, HDF5's, crash instead of failing on a full disk).
    """
    dest = output_path(path)
    directory = dest.parent if str(dest.parent) else Path(".")
    if not directory.is_dir():
        raise Caffe2xError(f"cannot write {dest}: directory {directory} does not exist")
    if dest.is_dir():
        raise Caffe2xError(f"cannot write {dest}: it is a directory")
    if dest.exists() and not dest.is_file():
        raise Caffe2xError(f"cannot write {dest}: it exists and is not a regular file")
    if size_hint > 0:
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = size_hint
        if free < size_hint:
            raise Caffe2xError(f"cannot write {dest}: no space left on device (needs at least {size_hint:,} bytes, "
                               f"{free:,} free)")
    with _signal_guard() as guard:
        with guard.critical():  # the file exists only once the try below is sure to remove it
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=directory)
            except OSError as exc:
                raise Caffe2xError(f"cannot write {dest}: {exc.strerror or exc}") from None
            os.close(fd)
            tmp = Path(tmp_name)
        try:
            guard.release()
            yield tmp
            guard.check()
            if dest.exists() and not overwrite:
                if same_content(tmp, dest):
                    return  # the very same bytes are already there: nothing to replace
                raise OutputExistsError(f"{dest} already exists (and differs from the new output); "
                                        f"pass {option('overwrite', True)} to replace it")
            with guard.critical():  # renamed and noted as one step
                os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
                os.replace(tmp, dest)
                COMMITTED.append(dest)
            guard.release()
        except Caffe2xError:
            raise
        except OSError as exc:
            reason = "no space left on device" if disk_full(exc, directory) else (exc.strerror or str(exc))
            raise Caffe2xError(f"cannot write {dest}: {reason}") from None
        except Exception as exc:
            if disk_full(exc, directory):
                raise Caffe2xError(f"cannot write {dest}: no space left on device") from None
            raise
        finally:
            with guard.critical():
                tmp.unlink(missing_ok=True)
            guard.release()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
