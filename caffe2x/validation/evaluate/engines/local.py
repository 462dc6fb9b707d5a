"""The ``local`` engine: a pool of worker processes on this machine, each framework loaded once per worker.

One worker runs in this process (nothing to gain from a second one); more are spawned (``spawn``, not
``fork``: the frameworks' thread pools do not survive a fork) with SIGINT ignored, so a Ctrl-C reaches
this process alone, which stops the pool and leaves the journal for ``--resume``. At most two batches per
worker are in flight, so memory does not grow with the image list. A worker that dies (killed, out of
memory) ends the run with an error saying how to resume.
"""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from caffe2x.errors import Caffe2xError, option
from caffe2x.validation.evaluate.engines import Done, Work

_EVALUATOR: Any = None
_FAILED: str | None = None


def _start(spec: Any, workers: int) -> None:
    """Pool initializer: the worker's model, built once (a failure is raised with the first batch)."""
    global _EVALUATOR, _FAILED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from caffe2x.validation.evaluate.worker import Evaluator, limit_threads

    limit_threads(workers)
    try:
        _EVALUATOR = Evaluator(spec)
    except Caffe2xError as exc:
        _FAILED = str(exc)
    except MemoryError:
        _FAILED = "out of memory while loading the model in a worker"


def _batch(number: int, items: list[tuple[int, str, int | None]]) -> tuple[int, int, dict[str, Any]]:
    if _EVALUATOR is None:
        raise Caffe2xError(_FAILED or "the worker has no model")
    try:
        return number, len(items), _EVALUATOR.run_batch(items)
    except Caffe2xError as exc:  # a plain Caffe2xError pickles whatever the subclass's constructor
        raise Caffe2xError(str(exc)) from None


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while workers are spawned: they inherit it (Python leaves an ignored SIGINT alone)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_local(spec: Any, work: Sequence[Work], workers: int, done: Done, say: Callable[[str], None]) -> None:
    """Run ``work`` on ``workers`` processes (this one when ``workers`` is 1)."""
    if not work:
        return
    from caffe2x.validation.evaluate.worker import Evaluator, limit_threads

    if workers <= 1:
        limit_threads(1)
        evaluator = Evaluator(spec)
        try:
            for number, items in work:
                done(number, len(items), evaluator.run_batch(items))
        finally:
            evaluator.close()
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    workers = min(workers, len(work))
    say(f"starting {workers} worker processes")
    _start_quiet_resource_tracker()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(spec, workers))
    queue = iter(work)
    pending: set[Any] = set()
    clean = False
    try:
        with _sigint_ignored():  # the pool spawns its processes as the first batches are submitted
            for number, items in queue:
                pending.add(pool.submit(_batch, number, items))
                if len(pending) >= 2 * workers:
                    break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                number, count, payload = future.result()
                done(number, count, payload)
            for number, items in queue:
                pending.add(pool.submit(_batch, number, items))
                if len(pending) >= 2 * workers:
                    break
        clean = True
    except BrokenProcessPool:
        raise Caffe2xError("a worker process died (killed or out of memory); the finished batches are in the "
                           f"journal: rerun with {option('resume', True)}") from None
    finally:
        if clean:
            pool.shutdown(wait=True)
        else:
            _stop(pool)


def _start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker without its leaked-semaphore warning.

    An interrupted run terminates the pool's workers and leaves at once (``os._exit``, so nothing
    partial is written after the one-line message); the pool's queue semaphores are then never
    unregistered, and the tracker, which removes them itself as the process ends, would print
    "resource_tracker: There appear to be N leaked semaphore objects" on the user's terminal: noise
    the user cannot act on. The tracker inherits ``sys.warnoptions`` as ``-W`` flags when it starts.
    """
    import sys
    from multiprocessing import resource_tracker

    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    sys.warnoptions.append(quiet)
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions.remove(quiet)


def _stop(pool: Any) -> None:
    """End the pool now: cancel what is queued and terminate the workers (their batches are redone)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(5)
