"""The signal phases of one ``main()`` call: SIGINT/SIGTERM raise while the command works, and are only
remembered (a call from a program) or ignored (the command's own process) once its outcome is decided,
so the one ``error: …`` line is printed once and the exit code is the decided one.

Process-wide start and end are :mod:`caffe2x._command`'s (why: its docstring).
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from caffe2x import _command
from caffe2x.fileio import Terminated


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _noted(signum: int, frame: FrameType | None) -> None:
    """After the outcome: a signal from a program's main thread changes nothing."""


class Phases:
    """``work()`` then ``done()``; ``restore()`` puts back what a calling program had."""

    def __init__(self, process: bool) -> None:
        self.process = process
        self.previous: dict[int, Any] = {}

    def work(self) -> None:
        """Signals raise (KeyboardInterrupt, Terminated); one remembered during start-up is raised now."""
        for sig, handler in ((signal.SIGINT, _interrupt), (signal.SIGTERM, _terminate)):
            self._set(sig, handler, take_over=(signal.default_int_handler, signal.SIG_DFL, _command.remember))
        early, _command.received = _command.received, None
        if early == signal.SIGTERM:
            raise Terminated()
        if early is not None:
            raise KeyboardInterrupt()

    def done(self) -> None:
        """The outcome is decided: from here on no signal raises."""
        if self.process:
            _command.ignore_from_now()
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._set(sig, _noted, take_over=(_interrupt, _terminate))

    def restore(self) -> None:
        if self.process:
            return  # the process exits next, ignoring signals
        for sig, handler in self.previous.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover - not the main thread
                pass

    def _set(self, sig: int, handler: Callable[[int, FrameType | None], None], take_over: tuple[Any, ...]) -> None:
        """Install ``handler`` where ``sig`` has one of the ``take_over`` handlers (an ignored signal stays
        ignored); the first handler replaced is the one :meth:`restore` puts back."""
        try:
            current = signal.getsignal(sig)
            if current in take_over:
                signal.signal(sig, handler)
                self.previous.setdefault(sig, current)
        except (ValueError, OSError):  # not the main thread (main() called from a worker thread)
            pass
