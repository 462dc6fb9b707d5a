"""Command-line argument helpers shared by the ``caffe2x`` subcommands.

Both :mod:`caffe2x.cli` (convert, inspect) and the ``validate`` command defined with the validator
import these, so neither has to import the other to describe a model on the command line.
This module imports nothing from caffe2x.
"""
from __future__ import annotations

import argparse
import sys
import os
from collections.abc import Callable
from typing import Any

from caffe2x.errors import Caffe2xError


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,3,224,224`` (or ``1x3x224x224``) as a tuple of positive ints; an argparse type."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be comma-separated integers, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"input shape must be positive integers, got {text!r}")
    return dims


def parse_floats(text: str) -> tuple[float, ...]:
    """``104,117,123`` as a tuple of floats; an argparse type."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return vals


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The arguments that name a model: ``model``, ``--prototxt/-p``, ``--input-shape``, ``--proto``."""
    p.add_argument("model", help="a .caffemodel (or a caffe2x .safetensors)")
    p.add_argument("--prototxt", "-p", help="deploy prototxt defining the net (its blobs come from the model)")
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W",
                   help="input shape, when the prototxt declares none (or to override it)")
    p.add_argument("--outputs", type=parse_names, metavar="BLOB[,BLOB...]",
                   help="keep only what these blobs need (e.g. a backbone, or the part of a net before a "
                        "Python layer); they become the net's outputs")
    p.add_argument("--proto", metavar="CAFFE.PROTO",
                   help="the Caffe fork's own caffe.proto, for fields caffe2x's schema does not know "
                        "(compiled with grpcio-tools; docs/forks.md)")


def parse_names(text: str) -> list[str]:
    """``res4f,pool5`` as a list of blob names; an argparse type."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more comma-separated blob names")
    return names


def _paths(text: str) -> list[str]:
    """One path, or several joined with commas (a path that exists is taken whole, commas and all)."""
    if os.path.exists(text) or "," not in text:
        return [text]
    return [part for part in text.split(",") if part]


def path_list_option(p: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    """An option taking one path (or a comma list) per occurrence, repeatable: unlike ``nargs="+"`` it
    can never swallow the positional model path that follows it."""
    p.add_argument(flag, type=_paths, action="extend", **kwargs)
    if not hasattr(p, "list_flags"):
        p.list_flags = []  # type: ignore[attr-defined]
    p.list_flags.append(flag)  # type: ignore[attr-defined]


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """``--force/-f``: replace existing outputs (without it a different existing file is kept)."""
    p.add_argument("--force", "-f", action="store_true",
                   help="replace existing output files (without it an existing, different file is kept and the "
                        "run fails)")


#: exit codes every subcommand shares (see caffe2x.cli.main)
EXIT_OK, EXIT_MISMATCH, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the shell's code for a writer whose reader went away


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def progress_say(quiet: bool) -> tuple[bool, Callable[[str], None] | None]:
    """(draw a tqdm bar?, how to print a progress line) for a long subcommand: a bar only on a terminal,
    lines above it when one is shown, nothing under ``--quiet``."""
    bar = not quiet and sys.stderr.isatty()
    if quiet:
        return bar, None
    if bar:
        from tqdm import tqdm

        return bar, lambda m: tqdm.write(m, file=sys.stderr)
    return bar, lambda m: print(m, file=sys.stderr, flush=True)


def framework_list(text: str | None) -> list[str] | None:
    """``--frameworks a,b`` as a list (None when the flag is not given); an empty list is an error."""
    if text is None:
        return None
    frameworks = [f.strip() for f in text.split(",") if f.strip()]
    if not frameworks:
        raise Caffe2xError("--frameworks names no framework")
    return frameworks
