"""``caffe2x`` command line: a thin shell over the library (the parser, the dispatch to one module per
subcommand, and the error and signal conventions every subcommand shares).

Exit codes: 0 success; 1 a validation found a difference; 2 bad input or usage (one line
``error: …`` on stderr, never a traceback, never a partial file); 130 interrupted (SIGINT);
143 terminated (SIGTERM). An existing output is replaced only with ``--force``; an output that is
also an input of the run is always refused.
A warning (HED's renamed duplicate layers, a fork's pooling rule) is one ``warning: …`` line on stderr,
also under ``--quiet``, and the command goes on.
Set ``CAFFE2X_DEBUG=1`` to see tracebacks of unexpected errors (and warnings in Python's own format).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from caffe2x import _command
from caffe2x.cli.args import EXIT_BROKEN_PIPE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED
from caffe2x.errors import Caffe2xError, cli_message


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors follow the one-line ``error: …`` convention with exit 2, and a word
    left over after a one-path option (``--images a b MODEL``) is explained."""

    list_flags: list[str]

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            message = f"unrecognized arguments: {' '.join(extras)}"
            sub = self._subcommand(getattr(ns, "command", None))
            words = list(sys.argv[1:] if args is None else args)
            flags = [f for f in getattr(sub, "list_flags", []) if f in words]
            if flags:
                each = "takes one path" if len(flags) == 1 else "take one path each"
                model = f"MODEL was taken to be {ns.model}; " if getattr(ns, "model", None) else ""
                message += (f" ({model}{' and '.join(flags)} {each}: repeat the flag, e.g. {flags[0]} a "
                            f"{flags[0]} b, or join paths with commas, {flags[0]} a,b)")
            self.error(message)
        return ns

    def _subcommand(self, name: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(name) if name else None
        return None


#: the subcommands and their one-line help, in the order ``--help`` lists them; each is the module
#: ``caffe2x.cli.<name>`` with ``add_arguments(parser)`` and ``run(args) -> exit code``
SUBCOMMANDS = {
    "convert": "convert a caffemodel to torch / keras / safetensors / onnx",
    "inspect": "list layers, types, output shapes and parameter counts",
    "fixture": "write a synthetic model (resnet50, googlenet, tiny, …: caffe2x fixture --help lists them)",
    "validate": "run every framework and compare the logits",
    "evaluate": "accuracy and agreement of every framework over a whole image set",
}


def subcommand(name: str) -> ModuleType:
    """The module of subcommand ``name``, imported only when that subcommand runs (or ``--help`` lists
    every option): building validate's options imports the comparison code, no part of every convert."""
    return importlib.import_module(f"caffe2x.cli.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (``only``) with the options of that one subcommand filled in: the
    others keep their name and help for ``caffe2x --help``, and building validate's options (which
    imports the comparison code) is not part of every ``convert``'s wait."""
    from caffe2x._version import __version__

    parser = _Parser(prog="caffe2x", description="Convert Caffe models and prove the numbers did not change.")
    parser.add_argument("--version", action="version", version=f"caffe2x {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_ in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if only is None or only == name:
            subcommand(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``caffe2x`` console script (and ``python -m caffe2x``): the command's exit
    code, after at most one ``error: …`` line on stderr.

    A reader of stdout or stderr that went away (``caffe2x inspect M --json | head``) ends the command
    quietly with exit 141 (128 + SIGPIPE, what a shell reports for ``yes | head``): no message, and
    nothing left in Python's buffers to complain about at interpreter exit.

    Signals (see :mod:`caffe2x._command` and :mod:`caffe2x.cli.signals`): while the command works, SIGINT
    raises KeyboardInterrupt and SIGTERM :class:`~caffe2x.fileio.Terminated`, so temporary files go on the
    way out; wherever the interrupt lands (an ``except`` clause included) it becomes exit 130 and one line.
    Once the outcome is decided no signal raises any more, so the line is printed once and, in the
    command's own process, a late Ctrl-C cannot kill the interpreter while it finalises.
    """
    from caffe2x.cli.signals import Phases
    from caffe2x.fileio import COMMITTED, Terminated

    phases = Phases(process=_command.is_command and argv is None)
    written = len(COMMITTED)
    try:
        try:
            phases.work()
            code, message = _outcome(argv)
            _flush_output()  # a closed pipe shows here, not as "Exception ignored" at interpreter exit
        except BrokenPipeError:  # the reader of stdout or stderr went away: end quietly, as Unix tools do
            _discard_output()
            code, message = EXIT_BROKEN_PIPE, None
        except KeyboardInterrupt:
            code, message = EXIT_INTERRUPTED, _stopped("interrupted", COMMITTED[written:])
        except Terminated:
            code, message = EXIT_TERMINATED, _stopped("terminated", COMMITTED[written:])
        phases.done()
    except KeyboardInterrupt:  # landed in an except clause above, or before done() took effect
        phases.done()
        code, message = EXIT_INTERRUPTED, _stopped("interrupted", COMMITTED[written:])
    except Terminated:
        phases.done()
        code, message = EXIT_TERMINATED, _stopped("terminated", COMMITTED[written:])
    if message:
        try:
            print(message, file=sys.stderr, flush=True)
        except BrokenPipeError:  # nobody reads stderr either
            _discard_output()
            code = EXIT_BROKEN_PIPE
    if phases.process and code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # Leave now, cleanup done: a KeyboardInterrupt that passed through code the interpreter ran for
        # a C extension (torch's import executes Python through the C API) marks it unhandled, and CPython
        # then kills itself with SIGINT at exit after our line (seen: exit -2, 1 run in 15 near 2.5 s)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if phases.process and _quick_exit:
        _exit_now(code)
    phases.restore()
    return code


#: set by :func:`_outcome` when the subcommand that ran says ``QUICK_EXIT = True``
_quick_exit = False


def _exit_now(code: int) -> None:
    """End the command's own process now: stdio flushed and every ``atexit`` handler run, but not the
    interpreter's finalisation, which tears down every module and collects every object one by one
    while nothing is left to do: 0.02 s of a 0.23 s ``convert --to safetensors`` of ResNet-50 (0.237 ->
    0.216 s, medians of 11). Only for subcommands whose work is over when ``run`` returns (``QUICK_EXIT``:
    every output closed and renamed into place, no child process or thread of theirs left): ``convert``,
    ``inspect``, ``fixture``."""
    import atexit

    try:
        _flush_output()
    except (BrokenPipeError, OSError, ValueError):  # a reader that went away: nothing more to say
        _discard_output()
        code = EXIT_BROKEN_PIPE if code == 0 else code
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's own, what finalisation calls first
    if run_exitfuncs is None:  # pragma: no cover - another interpreter: finalise as usual
        return
    run_exitfuncs()
    os._exit(code)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null: whatever Python still holds in their buffers (and flushes
    at exit) goes nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # no real file descriptor (a test's StringIO)
            pass
    os.close(devnull)


def _stopped(how: str, written: Sequence[object]) -> str:
    """``error: interrupted``, saying which outputs were complete (renamed into place) before it and are
    still there (a run's scratch files, such as validate's artifacts, went with its work directory)."""
    written = [p for p in written if os.path.exists(p)]
    if not written:
        return f"error: {how}"
    return f"error: {how}; {', '.join(map(str, written))} had been written in full and {'is' if len(written) == 1 else 'are'} kept"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning while a command runs, as one ``warning: …`` line on stderr (above a progress bar when
    one is drawn): caffe2x's own (:class:`~caffe2x.errors.Caffe2xWarning`) by their message, another
    library's with its category named. Python's own format (``file:line: Category: …`` and the source
    line) points into caffe2x's code, which tells a user nothing; ``CAFFE2X_DEBUG=1`` keeps it."""
    from caffe2x.errors import Caffe2xWarning, one_line

    text = one_line(message if isinstance(message, BaseException) else Warning(str(message)))
    if not issubclass(category, Caffe2xWarning):
        text = f"{text} ({category.__name__})"
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None and getattr(tqdm, "tqdm", None) is not None:
        tqdm.tqdm.write(f"warning: {text}", file=sys.stderr)
    else:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _outcome(argv: Sequence[str] | None) -> tuple[int, str | None]:
    """Parse and run the subcommand: its exit code and the error line to print (None: nothing)."""
    global _quick_exit
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        command = next((w for w in words if not w.startswith("-")), None)  # the subcommand comes first
        parser = build_parser(command if command in SUBCOMMANDS else None)
        args = parser.parse_args(words)
        with warnings.catch_warnings():
            if not os.environ.get("CAFFE2X_DEBUG"):
                warnings.showwarning = _show_warning
            module = subcommand(args.command)
            _quick_exit = bool(getattr(module, "QUICK_EXIT", False))
            _command.collect_from_now()
            return module.run(args), None
    except SystemExit as exc:  # argparse: --help, --version, a usage error (it printed its own lines)
        if isinstance(exc.code, str):
            return EXIT_ERROR, f"error: {exc.code}"
        return (exc.code if isinstance(exc.code, int) else 0), None
    except Caffe2xError as exc:
        return EXIT_ERROR, f"error: {cli_message(exc)}"  # options named by their flags
    except BrokenPipeError:
        raise  # the reader went away: main() ends quietly
    except MemoryError:
        return EXIT_ERROR, "error: out of memory"
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if os.environ.get("CAFFE2X_DEBUG"):
            raise
        return EXIT_ERROR, (f"error: internal error ({type(exc).__name__}: {exc}); rerun with CAFFE2X_DEBUG=1 "
                            f"and report it")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
