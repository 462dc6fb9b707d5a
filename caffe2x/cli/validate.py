"""The ``caffe2x validate`` subcommand: its options and the command (the library is :mod:`caffe2x.validation.validator`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from caffe2x.cli.args import (EXIT_MISMATCH, EXIT_OK, add_force_argument, add_model_args, framework_list,
                              parse_floats, path_list_option, progress_say)
from caffe2x.errors import Caffe2xError
from caffe2x.targets import all_targets, names, profile_choices
from caffe2x.validation.comparison import DEFAULT_ATOL, DEFAULT_RTOL


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``caffe2x validate`` options (``p`` is the subcommand's parser)."""
    add_model_args(p)
    p.add_argument("--frameworks", metavar="LIST",
                   help=f"comma-separated frameworks to check ({', '.join(names(runs=True))}); default: every "
                        f"installed one (a named one that is not installed fails the run)")
    path_list_option(p, "--images", metavar="FILE|DIR",
                     help="photos to run (files and/or directories; repeat the flag or join with commas); "
                          "default: the 4 packaged sample photos")
    means = p.add_mutually_exclusive_group()
    means.add_argument("--mean", metavar="MEAN.binaryproto", help="mean image to subtract (centre-cropped to the input)")
    means.add_argument("--mean-values", metavar="B,G,R", type=parse_floats,
                       help="per-channel means in BGR order (default 103.94,116.78,123.68)")
    p.add_argument("--labels", metavar="synset_words.txt", help="class names, one per line, for the top-5 listing")
    p.add_argument("--json", metavar="REPORT.json", help="write the machine-readable report (schema caffe2x.validate/1)")
    p.add_argument("--html", metavar="REPORT.html",
                   help="write a self-contained HTML report with the per-layer error plot (turns on --per-layer)")
    p.add_argument("--per-layer", action="store_true",
                   help="compare every layer's output and name the first one past tolerance")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help="pass if max|a-b| <= atol + rtol*max|ref| (default %(default)g)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute slack (default %(default)g)")
    readable = dict.fromkeys(s for t in all_targets() if t.runs for s in t.read_suffixes)
    path_list_option(p, "--against", metavar="ARTIFACT",
                     help=f"existing {'/'.join(readable)} file to check tensor by tensor and run (repeat the flag "
                          f"or join with commas)")
    p.add_argument("--profile", action="append", choices=profile_choices(), metavar="NAME",
                   help="the --against files of a format that cannot record it (.pt) were written with this "
                        "naming profile: check them against the logit bound that conversion measured")
    p.add_argument("--oracle", action="append", choices=["opencv"], metavar="opencv",
                   help="also compare the logits with an independent Caffe implementation (OpenCV's importer: "
                        "pip install 'caffe2x[oracle]'); layers it computes differently are named, not failed")
    p.add_argument("--caffe-blobs", metavar="BLOBS.npz|.h5",
                   help="blobs real Caffe computed (net.blobs[name].data by blob name; docs/caffe-blobs.md): "
                        "the numpy reference is checked against each, the frameworks against Caffe's logits")
    p.add_argument("--inputs", metavar="X.npy|.npz|IMAGES",
                   help="the input batch as .npy/.npz (default with --caffe-blobs: its input blob), or images")
    p.add_argument("--keep-artifacts", metavar="DIR", help="write the converted files here instead of a temp dir")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress; print only the verdict")
    p.add_argument("--verbose", action="store_true",
                   help="keep the TF C++ and absl log lines (silenced by default)")
    add_force_argument(p)


def quiet_frameworks() -> None:
    """The TF C++ log (oneDNN notices, CPU feature lines) and absl's Python log off, set before the
    framework is imported (``--verbose`` keeps them)."""
    import os

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    """``caffe2x validate``: 0 when everything agrees, 1 when something differs (2: bad input, raised)."""
    from caffe2x.fileio import OutputExistsError, atomic_output, refuse_collisions
    from caffe2x.validation.report import render_html, render_json, render_table, verdict
    from caffe2x.validation.validator import run_inputs, validate

    quiet = getattr(args, "quiet", False)
    if getattr(args, "verbose", False):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # every TF log line, the import-time ones too
    else:
        quiet_frameworks()
    bar, say = progress_say(quiet)
    frameworks = framework_list(args.frameworks)
    refuse_collisions([("--json report", args.json), ("--html report", args.html)],
                      run_inputs(args.model, args.prototxt, args.mean, args.images, args.against, args.labels))
    for out in (args.json, args.html):
        if out and not Path(out).resolve().parent.is_dir():
            raise Caffe2xError(f"cannot write {out}: directory {Path(out).parent} does not exist")
        if out and Path(out).exists() and not args.force:  # a report never comes out identical: fail now
            raise OutputExistsError(f"{out} already exists; pass --force to replace it")
    if args.html and not args.per_layer:
        args.per_layer = True
        if say:
            say("--html plots the error per layer: comparing every layer (--per-layer)")
    report = validate(args.model, args.prototxt, frameworks=frameworks, images=args.images, mean=args.mean,
                      mean_values=args.mean_values, rtol=args.rtol, atol=args.atol, per_layer=args.per_layer,
                      against=args.against, input_shape=args.input_shape, labels=args.labels,
                      outputs=args.outputs,
                      keep_artifacts=args.keep_artifacts, progress=say, proto=args.proto,
                      overwrite=args.force, caffe_blobs=args.caffe_blobs, inputs=args.inputs,
                      progress_bar=bar, profiles=args.profile, oracles=args.oracle)
    data = report.to_dict()
    if args.json:
        with atomic_output(args.json, overwrite=True) as tmp:  # existence checked above
            tmp.write_text(render_json(data), encoding="utf-8")
    if args.html:
        with atomic_output(args.html, overwrite=True) as tmp:
            tmp.write_text(render_html(data), encoding="utf-8")
    print(verdict(data) if quiet else render_table(data))
    if not quiet:
        for out in (args.json, args.html):
            if out:
                print(f"report written to {out}", file=sys.stderr)
    return EXIT_OK if report.passed else EXIT_MISMATCH
