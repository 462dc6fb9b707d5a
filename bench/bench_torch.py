#!/usr/bin/env python
"""The converted torch module's forward pass against a floor, and against an earlier revision.

For the synthetic ResNet-50 (its graph built in process, nothing written) every round times, each in a
fresh process (one torch thread, ``torch.inference_mode``, warm-up excluded, median of ``--repeat``):

=============  =======================================================================================
case           what runs
=============  =======================================================================================
``floor``      the same net as straight ``torch.nn.functional`` calls over the graph's tensors
               (``conv2d``, ``batch_norm``, ``relu``, ``max_pool2d(ceil_mode=True)``, ``avg_pool2d``,
               ``linear``): no modules, no wrappers -- what the converted net cannot beat
``module``     ``caffe2x.to_torch(graph)(x)`` from this checkout
``scripted``   ``torch.jit.script`` of it
``before``     ``caffe2x.to_torch(graph)(x)`` from ``--before REF`` (a temporary ``git worktree``), if given
=============  =======================================================================================

at batch 1 and ``--batch`` (default 8). The ratios to the floor are printed last; the fixed-size torch
path must not get slower than ``before``. Usage::

    python bench/bench_torch.py [--before REF] [--batch 8] [--repeat 7] [--rounds 3]
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

#: run in a child: prints {"case": seconds-per-forward}
CHILD = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from caffe2x import fixtures
case, batch, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
graph = fixtures.graph("resnet50")
x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32) * 50)

def floor_net(graph):
    import torch.nn.functional as F
    t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in graph.tensors.items()}
    def run(x):
        values = {name: x for name in graph.inputs}
        for node in graph.nodes:
            a, p = node.attrs, {role: t[key] for role, key in node.params.items()}
            ins = [values[v] for v in node.inputs]
            if node.op == "Convolution":
                y = F.conv2d(ins[0], p["weight"], p.get("bias"), tuple(a["stride"]), tuple(a["pad"]))
            elif node.op == "BatchNorm":
                y = F.batch_norm(ins[0], p["running_mean"], p["running_var"], None, None, False, 0.0, a["eps"])
            elif node.op == "Scale":
                y = torch.addcmul(p["bias"].view(1, -1, 1, 1), ins[0], p["weight"].view(1, -1, 1, 1))
            elif node.op == "ReLU":
                y = F.relu(ins[0])
            elif node.op == "Pooling" and a["method"] == "max":
                y = F.max_pool2d(ins[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]), ceil_mode=True)
            elif node.op == "Pooling":
                y = F.avg_pool2d(ins[0], tuple(a["kernel"]), tuple(a["stride"]))
            elif node.op == "Eltwise":
                y = ins[0] + ins[1]
            elif node.op == "InnerProduct":
                y = F.linear(ins[0].flatten(1), p["weight"], p.get("bias"))
            elif node.op == "Softmax":
                y = torch.softmax(ins[0], 1)
            else:
                raise SystemExit(f"floor: no rule for {node.op}")
            values[node.outputs[0]] = y
        return values[graph.value(graph.outputs[0])]
    return run

if case == "floor":
    net = floor_net(graph)
else:
    import caffe2x
    net = caffe2x.to_torch(graph)
    if case == "scripted":
        net = torch.jit.script(net)
times = []
with torch.inference_mode():
    net(x)
    for _ in range(repeat):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
print(json.dumps({case: sorted(times)[len(times) // 2]}))
"""


def _time(case: str, batch: int, repeat: int, code: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(batch), str(repeat)], cwd=code, env=env,
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])[case])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to compare against (checked out in a temporary worktree)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = None
        if args.before:
            before = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before), args.before],
                           check=True)
        try:
            cases = [("floor", ROOT), ("module", ROOT), ("scripted", ROOT)] + ([("before", before)] if before else [])
            results: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):  # alternate the cases, so load from other work hits them alike
                for batch in (1, args.batch):
                    for name, code in cases:
                        case = "module" if name == "before" else name
                        results.setdefault((name, batch), []).append(_time(case, batch, args.repeat, code))
        finally:
            if before is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    print(f"ResNet-50 forward, 224x224, one thread, median of {args.rounds} rounds x {args.repeat} runs")
    print(f"{'case':<10} {'batch':>5} {'ms':>9} {'x floor':>8}")
    for batch in (1, args.batch):
        floor = statistics.median(results[("floor", batch)])
        for name, _ in cases:
            t = statistics.median(results[(name, batch)])
            print(f"{name:<10} {batch:>5} {t * 1e3:>9.1f} {t / floor:>8.3f}")
    if before:
        for batch in (1, args.batch):
            ratio = statistics.median(results[("module", batch)]) / statistics.median(results[("before", batch)])
            print(f"module / before at batch {batch}: {ratio:.3f}")


if __name__ == "__main__":
    main()
