"""Ctrl-C and SIGTERM in the ``caffe2x`` command, from the first line of caffe2x code to the exit.

Why this exists: Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be.
The command catches it around its work (:func:`caffe2x.cli.main.main`), but the process runs caffe2x code
outside that ``try`` too: ``import caffe2x`` (numpy and every layer family, 0.1-0.5 s) before ``main``
starts, and interpreter finalisation after it returns, where Python restores the default action and a
late SIGINT kills the process with no message (seen: exit -2 with a complete output left). So:

- **start** (:func:`hold_from_start`, run by the first line of ``caffe2x/__init__.py``): when this
  process *is* the command (``python -m caffe2x`` or the ``caffe2x`` console script; never a program
  that merely imports caffe2x), SIGINT and SIGTERM are only remembered until ``main`` takes over, which
  then exits 130/143 with its one line; and the cyclic garbage collector is paused until the
  subcommand starts (:func:`collect_from_now` freezes what the imports built, then collects as usual),
  and numpy's BLAS starts with one thread until a forward pass needs more (:func:`full_blas`);
- **work**: ``main`` makes them raise KeyboardInterrupt / :class:`~caffe2x.fileio.Terminated`, so
  ``atomic_output`` removes its temporary file on the way out;
- **end** (:func:`ignore_from_now`): once the outcome is decided, the command ignores both signals
  (``SIG_IGN``, which finalisation keeps), prints its line and exits with the code it decided.

What no code of caffe2x can cover is the interpreter's own start-up before ``caffe2x/__init__.py`` runs
(site-packages, the console script's first line): a signal there ends Python as Python does, before
anything was read or written. This module imports nothing from caffe2x and nothing slow.
"""
from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

#: the first SIGINT/SIGTERM that arrived while remembered (not raised), or None
received: int | None = None
#: whether this process is the caffe2x command (set once by :func:`hold_from_start`)
is_command = False
#: whether :func:`hold_from_start` paused the cyclic garbage collector (resumed by :func:`collect_from_now`)
paused_at_start = False
#: the variables a user sets numpy's OpenBLAS thread count with; when none is set, the command imports
#: numpy with ``OPENBLAS_NUM_THREADS=1`` (see :func:`hold_from_start`)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
#: ``OPENBLAS_NUM_THREADS`` is set by :func:`hold_from_start` for numpy's import, not by the user
_blas_variable_set = False
#: numpy's BLAS started with one thread and is still waiting for :func:`full_blas`
blas_held = False
#: whether caffe2x owns this process: the command, or a child process of ``caffe2x validate``
#: (:mod:`caffe2x.validation.isolated`). Only then may caffe2x keep a framework's import from pulling in
#: optional packages for features it never uses (:func:`caffe2x.targets.keras.quiet.without_unused_extras`);
#: a program that imports caffe2x keeps every import as it would be without caffe2x.
owns_process = False

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def started_as_command() -> bool:
    """``python [options] -m caffe2x …`` (runpy is still importing the package: ``argv[0] == '-m'``),
    or the console script (``__main__`` is the ``caffe2x`` script itself)."""
    argv = list(getattr(sys, "orig_argv", ()))
    if sys.argv[:1] == ["-m"] and "-m" in argv:
        i = argv.index("-m")
        return argv[i + 1:i + 2] == ["caffe2x"]
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or ""
    return os.path.basename(script) in ("caffe2x", "caffe2x.exe", "caffe2x-script.py") and \
        os.path.basename(sys.argv[0] if sys.argv else "") in ("caffe2x", "caffe2x.exe", "caffe2x-script.py")


def remember(signum: int, frame: FrameType | None) -> None:
    """A signal handler that only records the first signal."""
    global received
    if received is None:
        received = signum


def default_disposition(sig: int) -> bool:
    """Whether ``sig`` still has Python's default handling (a shell's ``SIG_IGN`` is left alone, as
    Python itself leaves an ignored SIGINT ignored)."""
    current = signal.getsignal(sig)
    return current is signal.default_int_handler or current == signal.SIG_DFL


def hold_from_start() -> None:
    """In the command's own process: remember SIGINT/SIGTERM until ``main`` takes over."""
    global is_command, owns_process, paused_at_start, _blas_variable_set, blas_held
    if is_command or not started_as_command():
        return
    is_command = owns_process = True
    if "numpy" not in sys.modules and not any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        # OpenBLAS starts a worker per core when numpy loads, and a fresh worker spins for a while: on a
        # 2-core machine it competed with the whole of a convert, which uses no BLAS (ResNet-50 to
        # safetensors: 0.185 -> 0.173 s, medians of 21). full_blas() gives it its threads when a forward
        # pass runs; numpy_imported() gives the variable back to the environment, for child processes.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        _blas_variable_set = blas_held = True
    if gc.isenabled():
        # numpy, caffe2x and argparse build ~30,000 objects that live until the exit; collecting them
        # while they are built frees nothing (see collect_from_now)
        gc.disable()
        paused_at_start = True
    for sig in SIGNALS:
        if default_disposition(sig):
            try:
                signal.signal(sig, remember)
            except (ValueError, OSError):  # pragma: no cover - not the main thread
                pass


def numpy_imported() -> None:
    """numpy is loaded (``caffe2x/__init__.py`` calls this right after importing it): take back the
    ``OPENBLAS_NUM_THREADS`` that :func:`hold_from_start` set, so that child processes (validate's
    frameworks, evaluate's workers) see the user's environment and start their BLAS as they would."""
    global _blas_variable_set
    if _blas_variable_set:
        _blas_variable_set = False
        os.environ.pop("OPENBLAS_NUM_THREADS", None)


def full_blas() -> None:
    """Before a forward pass in the command's process (:func:`caffe2x.graph.reference.execute`): give
    numpy's BLAS the threads it starts with by default, one per usable core, if :func:`hold_from_start`
    held it at one."""
    global blas_held
    if not blas_held:
        return
    blas_held = False
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threadpool_limits(limits=cores, user_api="blas")  # kept: the command ends with these threads


def collect_from_now() -> None:
    """The command's start-up imports are done (``main`` calls this before the subcommand runs): freeze
    what they built (:func:`gc.freeze`: every later collection, the exit's included, skips it) and
    resume the collector :func:`hold_from_start` paused. The paused imports saved 8-10 ms of a 0.18 s
    ``convert --to safetensors`` (medians of 21 runs alternated with the collector on, in both orders)."""
    global paused_at_start
    if paused_at_start:
        paused_at_start = False
        gc.freeze()
        gc.enable()


def ignore_from_now() -> None:
    """The outcome is decided: a later signal changes nothing and cannot kill finalisation."""
    for sig in SIGNALS:
        try:
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # pragma: no cover - not the main thread
            pass


def import_frozen(load: Callable[[], object]) -> None:
    """Run ``load`` (a framework's import) with Python's cyclic garbage collector paused, then freeze
    every object that exists (:func:`gc.freeze`): later collections, the one at interpreter exit
    included, skip them. Only for a process caffe2x owns (:data:`owns_process`), which ends after its
    one job, so nothing frozen is ever missed (see :mod:`caffe2x.cli.frozen_import` for the figures).
    An exception from ``load`` is raised after the collector is back as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        load()
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
