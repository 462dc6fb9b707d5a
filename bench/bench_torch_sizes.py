#!/usr/bin/env python
"""The torch layers that compute with sizes, at a fixed size: this checkout against an earlier revision.

ResNet-50 (``bench_torch.py``) has none of them. Here two small nets run eager, one torch thread,
``torch.inference_mode``, warm-up excluded, median of ``--repeat`` forwards, each case in a fresh
process, the cases alternated over ``--rounds``:

==========  =========================================================================================
net         layers
==========  =========================================================================================
``resize``  ``tests/helpers/resize_net.py`` at 1x3x20x18: Interp by zoom, shrink with a crop, a second
            input's size and explicit height/width, LRN within-channel, Reshape 0/0/-1, two PriorBox
``unpool``  1x16x64x64: MAX pooling with a mask, Upsample by the mask (scale 2), Reshape 0/0/-1, ArgMax
==========  =========================================================================================

The dynamic-shape code must not slow this fixed-size path: ``now / before`` is printed last. Usage::

    python bench/bench_torch_sizes.py --before REF [--repeat 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: run in a child with the checkout to time first on sys.path: prints {"net": seconds-per-forward}
CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
import caffe2x
from caffe2x.caffe.reader import graph_from_text
import importlib.util
net_name, repeat, helper = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("resize_net", helper)  # this checkout's, for both revisions
resize_net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resize_net)
RESIZE_OUTPUTS, RESIZE_PROTOTXT = resize_net.RESIZE_OUTPUTS, resize_net.RESIZE_PROTOTXT
UNPOOL = '''input: "data" input_shape { dim: 1 dim: 16 dim: 64 dim: 64 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "pool_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "pool_mask" top: "up" upsample_param { scale: 2 } }
layer { name: "r" type: "Reshape" bottom: "up" top: "r" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
layer { name: "am" type: "ArgMax" bottom: "r" top: "am" argmax_param { axis: 1 } }'''
text, shape, outputs = {"resize": (RESIZE_PROTOTXT, (1, 3, 20, 18), RESIZE_OUTPUTS),
                        "unpool": (UNPOOL, (1, 16, 64, 64), None)}[net_name]
net = caffe2x.to_torch(graph_from_text(text, seed=1), outputs)
x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
times = []
with torch.inference_mode():
    for _ in range(20):
        net(x)
    for _ in range(repeat):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
print(json.dumps({net_name: statistics.median(times)}))
"""

NETS = ("resize", "unpool")


def _time(net: str, repeat: int, code: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, net, str(repeat), str(ROOT / "tests" / "helpers" / "resize_net.py")], cwd=code, env=env,
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])[net])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a git revision to compare against (a temporary worktree)")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before), args.before], check=True)
        try:
            for _ in range(args.rounds):  # alternated, so load from other work hits both alike
                for net in NETS:
                    for name, code in (("now", ROOT), ("before", before)):
                        results.setdefault((name, net), []).append(_time(net, args.repeat, code))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    print(f"eager forward at the read size, one thread, median of {args.rounds} rounds x {args.repeat} runs")
    print(f"{'net':<8} {'now us':>9} {'before us':>10} {'now / before':>13}")
    for net in NETS:
        now, was = (statistics.median(results[(name, net)]) for name in ("now", "before"))
        print(f"{net:<8} {now * 1e6:>9.1f} {was * 1e6:>10.1f} {now / was:>13.3f}")


if __name__ == "__main__":
    main()
