"""``caffe2x fixture``: write a synthetic model (the built-in default is the synthetic ResNet-50)."""
from __future__ import annotations

import argparse
import sys

from caffe2x.cli.args import EXIT_OK, add_force_argument, say


#: the process may end as soon as ``run`` returns (:func:`caffe2x.cli.main._exit_now`)
QUICK_EXIT = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    from caffe2x import fixtures

    p.add_argument("name", choices=fixtures.names(), metavar="NAME",
                   help=f"{' | '.join(fixtures.model_names())}, or a small layer test net: "
                        f"{', '.join(fixtures.ZOO)}")
    p.add_argument("-o", "--output-dir", required=True, help="directory for <name>.caffemodel and prototxt")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic weights (default 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, print only the two file paths")
    add_force_argument(p)


def run(args: argparse.Namespace) -> int:
    from caffe2x.fixtures import write_model

    say(args, f"synthesising {args.name} (seed {args.seed})")
    model, deploy = write_model(args.name, args.output_dir, seed=args.seed, overwrite=args.force,
                                progress=not args.quiet and sys.stderr.isatty())
    print(model)
    print(deploy)
    return EXIT_OK
