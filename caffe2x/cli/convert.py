"""``caffe2x convert``: one model to one target file, checked before the model is read."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from caffe2x.cli.args import EXIT_OK, add_force_argument, add_model_args, say
from caffe2x.errors import Caffe2xError


#: the process may end as soon as ``run`` returns (:func:`caffe2x.cli.main._exit_now`)
QUICK_EXIT = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    from caffe2x.targets import profile_choices, target_choices

    add_model_args(p)
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


def run(args: argparse.Namespace) -> int:
    from caffe2x.convert import check_request, write
    from caffe2x.loading import read_model

    from caffe2x.fileio import refuse_collisions

    out, target = _convert_destination(args)
    if not out.parent.is_dir():  # before the model is read, not when the writer opens the file
        raise Caffe2xError(f"cannot write {out}: directory {out.parent} does not exist")
    refuse_collisions([("output", out)], [("model", args.model), ("prototxt", args.prototxt)])
    options = {k: True for k in ("emit_code", "full_model") if getattr(args, k)}
    check_request(target, out, dtype=args.dtype, profile=args.profile, options=options)
    start = time.perf_counter()
    say(args, f"reading {args.model}" + (f" with {args.prototxt}" if args.prototxt else ""))
    graph = read_model(args.model, args.prototxt, args.input_shape, progress=not args.quiet and sys.stderr.isatty(),
                 outputs=args.outputs, proto=args.proto)
    from caffe2x.graph.counts import caffe_parameter_count

    say(args, f"  {len(graph.nodes)} layers, {caffe_parameter_count(graph):,} parameters")
    say(args, f"writing {out} ({target})")
    from caffe2x.cli.frozen_import import import_writer
    from caffe2x.targets import get

    import_writer(get(target))  # the framework, its objects frozen: skipped by every later collection
    notes = write(graph, out, target, dtype=args.dtype, profile=args.profile, fold_bn=args.fold_bn,
                  overwrite=args.force, **options)
    for note in notes:
        say(args, f"  note: {note}")
    say(args, f"done in {time.perf_counter() - start:.1f}s: {out}")
    return EXIT_OK


def _convert_destination(args: argparse.Namespace) -> tuple[Path, str]:
    """The output file and target of ``convert``: from ``--to`` and/or ``-o`` (a directory gets
    ``<model stem>.<suffix>``), checked before the model is read."""
    from caffe2x.convert import default_output, names_directory, output_in
    from caffe2x.targets import all_targets, names, target_for, writer_for_suffix

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
