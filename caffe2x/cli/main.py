"""``caffe2x`` command line: a thin shell over the library (the parser, the dispatch to one module per
subcommand, and the error and signal conventions every subcommand shares).

Exit codes: 0 success; 1 a validation found a difference; 2 bad input or usage (one line
``error: …`` on stderr, never a traceback, never a partial file); 130 interrupted (SIGINT);
143 terminated (SIGTERM). An existing output is replaced only with ``--force``; an output that is
also an input of the run is always refused.
Set ``CAFFE2X_DEBUG=1`` to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from caffe2x.cli.args import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED
from caffe2x.errors import Caffe2xError


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
    "fixture": "write a synthetic model (resnet50, resnet101, resnet152, googlenet, …)",
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
    """Entry point of the ``caffe2x`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)  # the subcommand comes first
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(words)
    from caffe2x.fileio import Terminated

    previous = _terminate_on_sigterm()
    try:
        return subcommand(args.command).run(args)
    except Caffe2xError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if os.environ.get("CAFFE2X_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with CAFFE2X_DEBUG=1 and report it",
              file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_on_sigterm():  # type: ignore[no-untyped-def]
    """SIGTERM raises :class:`~caffe2x.fileio.Terminated`, so temporary files and directories are
    removed on the way out (the default action would kill the process on the spot)."""
    from caffe2x.fileio import Terminated

    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a worker thread)
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
