"""A framework's part of a validation in a child process of its own (:func:`run_isolated`), so its
memory goes back to the system when it is done.

Why: a framework keeps much of what it allocated after its model is dropped (one kept ~0.5 GB after a
ResNet-50 model was deleted; the C allocator keeps freed buffers of another), and importing the three
built-in frameworks into one process already costs ~0.75 GB. One child per framework peaks at
that framework alone; the validating process never imports a framework.

The child is ``python -c <bootstrap>`` with the parent's ``sys.path`` (so it imports the same caffe2x);
the graph, the batch and the reference logits reach it as one file the parent wrote into its
private scratch directory (written once per validation; the arrays' bytes out of band, which the child
maps, :func:`write_shared`); progress comes back as JSON lines on a pipe,
the :class:`~caffe2x.validation.framework_run.FrameworkOutcome` as a pickle file. A child that dies (killed for
memory, a segfault in a framework) is that framework's FAIL, not a crash of the validation.
"""
from __future__ import annotations

import itertools
import json
import logging
import mmap
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from pathlib import Path

import numpy as np

from caffe2x.errors import one_line
from caffe2x.graph.ir import Graph

_BOOTSTRAP = ("import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
              "from caffe2x.validation.isolated import child_main; child_main(sys.argv[2:])")


@dataclass
class SharedInputs:
    """What every child of one validation needs, pickled once."""

    graph: Graph
    x: np.ndarray
    ref_logits: np.ndarray


def write_shared(path: Path, graph: Graph, x: np.ndarray, ref_logits: np.ndarray) -> Path:
    """Pickle the shared inputs with every array's bytes out of band, each at a page boundary after the
    pickle, so that a child maps them (:func:`read_shared`) instead of reading a copy into its heap.

    Why: a child's graph is then views of this file, like the validating process's of the caffemodel,
    and a target that copies the weights into its framework's own buffers hands their pages back
    (:func:`caffe2x.graph.pages.release`; one framework's child held the graph's 98 MiB of ResNet-50 beside
    its variables). Layout: 8-byte pickle length, the pickle, then the buffers; the pickle holds their
    (offset, length) list in front of the pickled inputs."""
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(SharedInputs(graph, x, ref_logits), protocol=5, buffer_callback=buffers.append)
    spans, at = [], 0
    for buf in buffers:
        n = buf.raw().nbytes
        spans.append((at, n))
        at += _page_up(n)
    head = pickle.dumps(spans, protocol=pickle.HIGHEST_PROTOCOL)
    start = _page_up(16 + len(head) + len(body))
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + len(body).to_bytes(8, "little") + head + body)
        for (offset, _), buf in zip(spans, buffers):
            f.seek(start + offset)
            f.write(buf.raw())
    return path


def _page_up(n: int) -> int:
    """``n`` rounded up to a whole number of pages (where :func:`write_shared` puts each buffer)."""
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def read_shared(path: Path) -> SharedInputs:
    """The inputs :func:`write_shared` wrote, every array a view of the file mapped copy-on-write (a child
    writing to one changes only its own pages, never the file)."""
    with open(path, "rb") as f:
        lengths = f.read(16)
        head_n, body_n = int.from_bytes(lengths[:8], "little"), int.from_bytes(lengths[8:], "little")
        spans = pickle.loads(f.read(head_n))
        body = f.read(body_n)
        start = _page_up(16 + head_n + body_n)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if spans else None
    if mm is None:
        return pickle.loads(body)
    view = memoryview(mm)
    return pickle.loads(body, buffers=[view[start + offset:start + offset + n] for offset, n in spans])


class Job(Protocol):
    """A picklable piece of a validation: a framework's run (:class:`~caffe2x.validation.framework_run.FrameworkJob`)
    or an artifact's check (:class:`~caffe2x.validation.artifacts.ArtifactJob`)."""

    def execute(self, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, say: Callable[[str], None],
                tick: Callable[[int], None]) -> Any: ...

    def failed(self, reason: str) -> Any: ...


_jobs = itertools.count()

#: the children running now (several run at once, each waited on by a thread of the validating process)
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def stop_all() -> None:
    """Stop every child running now (the validating thread, interrupted while others wait on theirs);
    each waiting thread then sees its child end and returns that job's failure."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _stop(proc)


@dataclass
class Started:
    """A child started before its job exists (:func:`start_early`): it imports its framework, then waits
    for the job on its stdin."""

    proc: subprocess.Popen[bytes]
    read_end: int       # its progress pipe
    job_file: Path
    result_file: Path


def _spawn(shared: Path, scratch: Path, modules: Sequence[str] = (), job: Job | None = None) -> Started:
    """A child for ``job`` (its file written before the child starts, which reads it at once), or, with
    ``modules``, one that imports them and waits for its job on stdin."""
    n = next(_jobs)
    job_file = scratch / f"job-{n}.pkl"
    result_file = scratch / f"result-{n}.pkl"
    result_file.unlink(missing_ok=True)
    if job is not None:
        _write_job(job_file, job)
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, json.dumps([p for p in sys.path]),
                                 str(write_end), str(shared), str(job_file), str(result_file),
                                 json.dumps(_logger_levels()), *modules],
                                pass_fds=(write_end,), stdin=subprocess.PIPE if modules else subprocess.DEVNULL,
                                stdout=_stderr_fd(),
                                start_new_session=True)  # a terminal's Ctrl-C reaches us only; we stop it
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    with _running_lock:
        _running.add(proc)
    return Started(proc, read_end, job_file, result_file)


def start_early(modules: Sequence[str], shared: Path, scratch: Path) -> Started:
    """A child that imports ``modules`` now and runs the job :func:`run_isolated` gives it later.

    Why: a framework's import is most of its child's time (one built-in framework's import is ~2.5-3 s of
    its child's ~5 s for ResNet-50, docs/speed.md). Started before the validating process runs the reference, the import
    overlaps that work instead of following it. ``shared`` need not exist yet. An unused one goes with
    :func:`abandon` (stopped as any child is)."""
    return _spawn(shared, scratch, modules)


def abandon(started: Started) -> None:
    """End a child of :func:`start_early` that was never given its job."""
    try:
        if started.proc.stdin is not None:
            started.proc.stdin.close()
    except OSError:
        pass
    try:
        _stop(started.proc)  # still importing, it would only see the closed stdin once the import is done
    finally:
        with _running_lock:
            _running.discard(started.proc)
        try:
            os.close(started.read_end)
        except OSError:
            pass


def run_isolated(job: Job, shared: Path, scratch: Path, say: Callable[[str], None],
                 tick: Callable[[int], None], started: Started | None = None) -> Any:
    """``job.execute`` in a child process (``started``, a child of :func:`start_early`, or a new one); its
    messages are passed to ``say`` and ``tick`` as they come, its result comes back (``job.failed(why)``
    when the child dies before reporting)."""
    if started is None:
        started = _spawn(shared, scratch, job=job)
    else:
        _write_job(started.job_file, job)
        try:
            assert started.proc.stdin is not None
            started.proc.stdin.write(b"go\n")
            started.proc.stdin.close()
        except (BrokenPipeError, OSError):  # it died while importing: its exit code says how, below
            pass
    proc, read_end, result_file = started.proc, started.read_end, started.result_file
    try:
        with os.fdopen(read_end, "r", encoding="utf-8") as pipe:
            for line in pipe:
                msg = json.loads(line)
                if "say" in msg:
                    say(msg["say"])
                elif "tick" in msg:
                    tick(int(msg["tick"]))
        rc = proc.wait()
    except BaseException:  # an interrupt or SIGTERM of the validation: the child goes too
        _stop(proc)
        raise
    finally:
        with _running_lock:
            _running.discard(proc)
    if rc == 0 and result_file.is_file():
        with open(result_file, "rb") as f:
            outcome = pickle.load(f)
        return outcome
    if rc < 0:
        try:
            why = f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            why = f"was killed by signal {-rc}"
        why += " (out of memory?)" if -rc == signal.SIGKILL else ""
    else:
        why = f"exited with code {rc}"
    return job.failed(f"its child process {why} before reporting")


def _write_job(path: Path, job: Job) -> None:
    with open(path, "wb") as f:
        pickle.dump((job, _logger_levels()), f, protocol=pickle.HIGHEST_PROTOCOL)


def _logger_levels() -> dict[str, int]:
    """Levels set on this process's loggers (the CLI quiets a framework's Python logger before it is
    imported), for the child to set the same."""
    return {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET}


def _stderr_fd() -> int | None:
    """The child's stdout goes to our stderr: a framework's prints must not mix into the report."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM first (the child removes its temporary files), SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def own_peak_rss_mb() -> float:
    """This process's own peak RSS in MB (10^6 bytes): ``VmHWM`` from ``/proc/self/status``.

    Why not ``ru_maxrss``: Linux keeps the larger of the parent's RSS at fork and the child's own across
    exec, so a child started by a validating process that had grown to 300 MB (or by a pytest worker
    holding a framework, 1 GB) reported that parent's figure, not its framework's. ``ru_maxrss`` is the
    fallback where there is no ``/proc`` (macOS counts it in bytes, Linux in KiB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        pass
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1e6 if sys.platform == "darwin" else maxrss * 1024 / 1e6


def _unraisable(info: Any) -> None:
    """The child's ``sys.unraisablehook``. The exception the SIGTERM handler raises can land in a callback
    (a weakref callback during an import, a ``__del__``), where Python only prints it with a traceback and
    carries on; and once the parent stopped reading, closing the progress pipe fails the same way. Either
    means this child is being stopped: exit at once, quietly (the parent removes the run's files)."""
    from caffe2x.fileio import Terminated

    if isinstance(info.exc_value, (Terminated, BrokenPipeError)):
        os._exit(128 + signal.SIGTERM)
    sys.__unraisablehook__(info)


def child_main(argv: Sequence[str]) -> None:
    """The child's side: run the job, send progress, pickle the outcome."""
    fd, shared_file, job_file, result_file = int(argv[0]), Path(argv[1]), Path(argv[2]), Path(argv[3])
    levels, modules = json.loads(argv[4]), list(argv[5:])
    from caffe2x import _command
    from caffe2x.fileio import Terminated

    _command.owns_process = True  # this process exists only to run the job

    def terminated(_signum: int, _frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminated)  # a file being written is removed on the way out
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops this child
    sys.unraisablehook = _unraisable
    for name, level in levels.items():  # before any import: a framework's import-time logging obeys them
        logging.getLogger(name).setLevel(level)
    try:
        if modules and not _imported_then_told_to_go(modules):
            return  # abandoned before its job: nothing to report
        _child(fd, shared_file, job_file, result_file)
    except Terminated:
        sys.exit(128 + signal.SIGTERM)


def _imported_then_told_to_go(modules: Sequence[str]) -> bool:
    """A child of :func:`start_early`: import ``modules`` (a failure is left for the job itself to meet and
    report as that framework's failure), then wait for the parent's word on stdin; False when stdin
    closes without it."""
    import importlib

    from caffe2x import _command

    def load() -> None:
        for name in modules:
            importlib.import_module(name)

    try:  # frozen: the framework's objects are left out of every later collection, the exit's included
        _command.import_frozen(load)
    except Exception:  # noqa: BLE001 - the job imports it again and reports why it cannot
        pass
    return sys.stdin.readline().strip() == "go"


def _child(fd: int, shared_file: Path, job_file: Path, result_file: Path) -> None:
    pipe = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def send(**msg: object) -> None:
        try:
            pipe.write(json.dumps(msg) + "\n")
            pipe.flush()
        except BrokenPipeError:  # the parent is gone or stopping this child: nobody to tell
            pass

    shared = read_shared(shared_file)
    with open(job_file, "rb") as f:
        job, levels = pickle.load(f)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        outcome = job.execute(shared.graph, shared.x, shared.ref_logits, lambda m: send(say=m),
                              lambda i: send(tick=i))
    except MemoryError:
        outcome = job.failed("running failed: MemoryError")
    except Exception as exc:  # noqa: BLE001 - reported as the job's failure, as a crash of the child would be
        outcome = job.failed(f"failed: {type(exc).__name__}: {one_line(exc)}")
    if hasattr(outcome, "peak_rss_mb"):
        outcome.peak_rss_mb = own_peak_rss_mb()
    with open(result_file, "wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.close()
