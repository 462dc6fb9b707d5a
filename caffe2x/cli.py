"""``caffe2x`` command line: a thin shell over the library.

Exit codes: 0 success; 1 a validation found a difference; 2 bad input or usage (one line
``error: …`` on stderr, never a traceback, never a partial file); 130 interrupted (SIGINT);
143 terminated (SIGTERM). An existing output is replaced only with ``--force``; an output that is
also an input of the run is always refused.
Set ``CAFFE2X_DEBUG=1`` to see tracebacks of unexpected errors.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .cliargs import add_force_argument
from .cliargs import add_model_args as _add_model_args
from .errors import Caffe2xError

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


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


#: the subcommands and their one-line help, in the order ``--help`` lists them
SUBCOMMANDS = {
    "convert": "convert a caffemodel to torch / keras / safetensors / onnx",
    "inspect": "list layers, types, output shapes and parameter counts",
    "fixture": "write a synthetic model (resnet50, resnet101, resnet152, googlenet, …)",
    "validate": "run every framework and compare the logits",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (``only``) with the options of that one subcommand filled in: the
    others keep their name and help for ``caffe2x --help``, and building validate's options (which
    imports the comparison code) is not part of every ``convert``'s wait."""
    from ._version import __version__

    parser = _Parser(prog="caffe2x", description="Convert Caffe models and prove the numbers did not change.")
    parser.add_argument("--version", action="version", version=f"caffe2x {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_ in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if only is None or only == name:
            _OPTIONS[name](p)
    return parser


def _convert_options(p: argparse.ArgumentParser) -> None:
    from .targets import profile_choices, target_choices

    _add_model_args(p)
    p.add_argument("--to", choices=target_choices(writes=True), metavar="FORMAT",
                   help="target format: %(choices)s (default: from the -o suffix)")
    p.add_argument("-o", "--output", help="output file (default: beside the model, suffix of the target)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="precision of the stored tensors (default float32); a reduced one prints the measured "
                        "logit change")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm+Scale into the layer before them")
    p.add_argument("--profile", choices=profile_choices(), metavar="NAME",
                   help="tensor names of another model zoo: torchvision (torch only), keras-applications "
                        "(keras .h5 only)")
    p.add_argument("--emit-code", action="store_true",
                   help="torch only: also write <stem>_model.py, a standalone nn.Module")
    p.add_argument("--full-model", action="store_true",
                   help="keras .h5 only: store the model config too (load_model instead of load_weights)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only errors")
    add_force_argument(p)


def _inspect_options(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _fixture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="resnet50 | resnet101 | resnet152 | caffenet | googlenet | squeezenet | mobilenet "
                                "| tiny | a small test net")
    p.add_argument("-o", "--output-dir", required=True, help="directory for <name>.caffemodel and prototxt")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic weights (default 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, print only the two file paths")
    add_force_argument(p)


def _validate_options(p: argparse.ArgumentParser) -> None:
    from .cli_validate import add_arguments

    add_arguments(p)


_OPTIONS = {"convert": _convert_options, "inspect": _inspect_options, "fixture": _fixture_options,
            "validate": _validate_options}


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import check_request, write
    from .reader import read

    from .fileio import refuse_collisions

    out, target = _convert_destination(args)
    refuse_collisions([("output", out)], [("model", args.model), ("prototxt", args.prototxt)])
    options = {k: True for k in ("emit_code", "full_model") if getattr(args, k)}
    check_request(target, out, dtype=args.dtype, profile=args.profile, options=options, cli=True)
    start = time.perf_counter()
    _say(args, f"reading {args.model}" + (f" with {args.prototxt}" if args.prototxt else ""))
    graph = read(args.model, args.prototxt, args.input_shape, progress=not args.quiet and sys.stderr.isatty(),
                 outputs=args.outputs, proto=args.proto)
    from .inspect import caffe_parameter_count

    _say(args, f"  {len(graph.nodes)} layers, {caffe_parameter_count(graph):,} parameters")
    _say(args, f"writing {out} ({target})")
    notes = write(graph, out, target, dtype=args.dtype, profile=args.profile, fold_bn=args.fold_bn,
                  overwrite=args.force, **options)
    for note in notes:
        _say(args, f"  note: {note}")
    _say(args, f"done in {time.perf_counter() - start:.1f}s: {out}")
    return EXIT_OK


def _convert_destination(args: argparse.Namespace) -> tuple[Path, str]:
    """The output file and target of ``convert``: from ``--to`` and/or ``-o`` (a directory gets
    ``<model stem>.<suffix>``), checked before the model is read."""
    from .convert import default_output, names_directory, output_in
    from .targets import all_targets, names, target_for, writer_for_suffix

    def formats() -> str:  # only for the error messages: listing every target scans the entry points
        suffixes = dict.fromkeys(s for t in all_targets() if t.writes for s in t.suffixes)
        return f"--to {'|'.join(names(writes=True))}, or -o FILE ending in {' '.join(suffixes)}"

    if args.to is None and args.output is None:
        raise Caffe2xError(f"say which format to write: {formats()}")
    if args.output is not None and names_directory(args.output):
        if args.to is None:
            raise Caffe2xError(f"-o {args.output} is a directory, which does not say the format: add "
                               f"--to {'|'.join(names(writes=True))}")
        directory = Path(args.output)
        if not directory.is_dir():
            raise Caffe2xError(f"cannot write into {args.output}: directory {directory} does not exist")
        return output_in(directory, args.model, args.to), args.to
    if args.output is not None:
        if args.to is None and writer_for_suffix(Path(args.output).suffix) is None:
            raise Caffe2xError(f"cannot tell the target format from -o {args.output}: {formats()}")
        return Path(args.output), target_for(args.to, args.output)
    return default_output(args.model, args.to), args.to


def cmd_inspect(args: argparse.Namespace) -> int:
    from .reader import read
    from .inspect import summary, format_table

    graph = read(args.model, args.prototxt, args.input_shape, outputs=args.outputs, proto=args.proto)
    info = summary(graph)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_table(info))
    return EXIT_OK


def cmd_fixture(args: argparse.Namespace) -> int:
    from .fixtures import write_model

    _say(args, f"synthesising {args.name} (seed {args.seed})")
    model, deploy = write_model(args.name, args.output_dir, seed=args.seed, overwrite=args.force,
                                progress=not args.quiet and sys.stderr.isatty())
    print(model)
    print(deploy)
    return EXIT_OK


COMMANDS = {"convert": cmd_convert, "inspect": cmd_inspect, "fixture": cmd_fixture}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``caffe2x`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)  # the subcommand comes first
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(words)
    handler = COMMANDS.get(args.command)
    from .fileio import Terminated

    previous = _terminate_on_sigterm()
    try:
        if handler is None:
            from .cli_validate import cmd_validate

            handler = cmd_validate
        return handler(args)
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
    from .fileio import Terminated

    def handler(signum, frame):  # type: ignore[no-untyped-def]
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a worker thread)
        return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
