"""The ``caffe2x evaluate`` subcommand: its options and the command (the library is
:mod:`caffe2x.validation.evaluate`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caffe2x.cli.args import (EXIT_INTERRUPTED, EXIT_TERMINATED, add_force_argument, add_model_args, framework_list,
                              parse_floats, progress_say)

#: the journal folder when neither --journal nor --json names one
DEFAULT_JOURNAL = "caffe2x-evaluate.journal"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number from 1, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``caffe2x evaluate`` options (``p`` is the subcommand's parser)."""
    from caffe2x.validation.comparison import DEFAULT_ATOL, DEFAULT_RTOL
    from caffe2x.validation.evaluate import DEFAULT_BATCH

    add_model_args(p)
    p.add_argument("--images", required=True, metavar="DIR|FILE",
                   help="a folder of images (recursive, sorted), a file listing image paths, or with --list the "
                        "folder the list's paths are relative to")
    p.add_argument("--list", metavar="val.txt",
                   help="Caffe's image list: 'path label' a line, the label after the last space")
    p.add_argument("--frameworks", metavar="LIST",
                   help="comma-separated frameworks (numpy,torch,keras,onnx); default: every installed one; the "
                        "numpy reference always runs")
    p.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH, metavar="N",
                   help="images per forward pass (default %(default)s)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: a pool of worker processes (default); ray: Ray actors (pip install 'caffe2x[ray]')")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="worker processes or Ray actors, each with every framework loaded (default: core count)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N images")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run recorded in the journal (same model, images and flags)")
    p.add_argument("--journal", metavar="DIR",
                   help=f"folder recording finished batches (default: REPORT.json.journal with --json, else "
                        f"./{DEFAULT_JOURNAL}); removed when the run completes")
    means = p.add_mutually_exclusive_group()
    means.add_argument("--mean", metavar="MEAN.binaryproto", help="mean image to subtract (centre-cropped to the input)")
    means.add_argument("--mean-values", metavar="B,G,R", type=parse_floats,
                       help="per-channel means in BGR order (default 103.94,116.78,123.68)")
    p.add_argument("--json", metavar="REPORT.json", help="write the report (schema caffe2x.evaluate/1)")
    p.add_argument("--per-image", metavar="OUT.csv", help="write one CSV row per image (every framework's top-5 "
                                                          "and error)")
    p.add_argument("--html", metavar="REPORT.html",
                   help="write an HTML page plotting the per-image error and the per-class agreement")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help="pass if max|a-b| <= atol + rtol*max|ref| over the set (default %(default)g)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="absolute slack (default %(default)g)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress; print only the verdict")
    add_force_argument(p)


def journal_folder(args: argparse.Namespace) -> Path:
    if args.journal:
        return Path(args.journal)
    if args.json:
        return Path(f"{args.json}.journal")
    return Path(DEFAULT_JOURNAL)


def run(args: argparse.Namespace) -> int:
    """``caffe2x evaluate``: 0 when every framework agrees within tolerance, 1 when not, 2 for bad input
    (undecodable images included: the report is still written); 130/143 when interrupted."""
    from caffe2x.cli.validate import quiet_frameworks
    from caffe2x.fileio import OutputExistsError, Terminated
    from caffe2x.validation.evaluate import evaluate
    from caffe2x.validation.evaluate.report import render_table, verdict

    quiet_frameworks()
    quiet = args.quiet
    bar, say = progress_say(quiet)
    frameworks = framework_list(args.frameworks)
    for out in (args.json, args.per_image, args.html):
        if out and Path(out).exists() and not args.force:
            raise OutputExistsError(f"{out} already exists; pass --force to replace it")
    journal = journal_folder(args)
    try:
        report = evaluate(args.model, args.prototxt, images=args.images, list_file=args.list, frameworks=frameworks,
                          batch_size=args.batch_size, engine=args.engine, workers=args.workers,
                          ray_address=args.ray_address, limit=args.limit, resume=args.resume, journal=journal,
                          force=args.force, json_path=args.json, per_image=args.per_image, html_path=args.html,
                          mean=args.mean, mean_values=args.mean_values, rtol=args.rtol, atol=args.atol,
                          input_shape=args.input_shape, outputs=args.outputs, proto=args.proto, progress=say,
                          progress_bar=bar)
    except KeyboardInterrupt:
        print(f"error: interrupted; finished batches are in {journal}: rerun with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"error: terminated; finished batches are in {journal}: rerun with --resume to continue", file=sys.stderr)
        return EXIT_TERMINATED
    data = report.to_dict()
    print(verdict(data) if quiet else render_table(data))
    if not quiet:
        for out in (args.json, args.per_image, args.html):
            if out:
                print(f"written: {out}", file=sys.stderr)
    if data["unreadable_total"]:
        first = data["unreadable"][0]
        print(f"error: {data['unreadable_total']} image(s) could not be decoded (unreadable[] in the report); first: "
              f"{first['reason']}", file=sys.stderr)
    return report.exit_code
