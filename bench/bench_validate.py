#!/usr/bin/env python
"""Speed and memory of a whole ``caffe2x validate`` of the synthetic ResNet-50 (and, with ``--models``,
the 553 MB V1-format VGG-16 of ``caffe2x fixture vgg16``) on the packaged photos.

Each run is a fresh ``caffe2x validate`` process (import time of caffe2x, torch, tensorflow and
onnxruntime included, as a user waits for it) over every installed framework; wall time and peak memory
are printed, then the per-framework times from the run's JSON report (write + load back, run).
``--per-layer`` also times a run with every layer's output compared.

Memory: a big model's validation runs each framework in a child process of its own, so one number is not
enough. Two are measured and the larger is the run's **peak RSS**, checked for ResNet-50 against issue
9's targets (default validate <= 1.5 GB, ``--per-layer`` <= 2 GB; MB and GB here are 10^6 and 10^9 bytes):

- *tree*: the sum of the RSS of the ``caffe2x validate`` process and all its descendants, sampled every
  50 ms from ``/proc`` (what the machine holds at once; a spike shorter than 50 ms can be missed);
- *largest process*: ``wait4``'s ``ru_maxrss`` of the validate process, which the kernel takes as the
  maximum over that process and its waited-for descendants, each one separately (exact, never a sum).

Usage::

    python bench/bench_validate.py [--models resnet50,vgg16] [--dir DIR] [--frameworks numpy,torch,keras,onnx]
                                   [--per-layer] [--repeat 1]

``--dir`` keeps the generated models between invocations (as ``bench_baselines.py --dir``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: issue 9's targets for ResNet-50, MB (10^6 bytes)
TARGETS = {("resnet50", "logits"): 1500, ("resnet50", "per-layer"): 2000}


def _tree_rss_mb(root: int) -> float:
    """Sum of the RSS (MB) of ``root`` and every descendant, following ``/proc/PID/task/TID/children``
    (a few small reads, ~0.1 ms: scanning all of ``/proc`` took 14 ms and ate CPU from the run measured)."""
    total, todo, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total / 1e6


def run(args: list[str]) -> tuple[float, float, float, float, int, str]:
    """(wall seconds, peak tree RSS MB (sampled), largest single process's peak RSS MB (wait4), CPU seconds
    of the tree (user + system, wait4), exit code, stderr) of ``python -m caffe2x ARGS``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "caffe2x", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (time.perf_counter() - start, peak[0], usage.ru_maxrss * 1024 / 1e6, usage.ru_utime + usage.ru_stime,
            proc.returncode, err)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frameworks", help="comma-separated (default: every installed one)")
    ap.add_argument("--per-layer", action="store_true", help="also time a --per-layer run")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--models", default="resnet50", help="comma-separated: resnet50, vgg16 (default: resnet50)")
    ap.add_argument("--dir", help="where the models are generated and kept (default: a temporary directory)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(opts.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for name in opts.models.split(","):
            bench_model(name, directory, Path(tmp), opts)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"(after the runs)")


def bench_model(name: str, directory: Path, scratch: Path, opts: argparse.Namespace) -> None:
    model, deploy = directory / f"{name}.caffemodel", directory / f"{name}-deploy.prototxt"
    if not (model.exists() and deploy.exists()):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "caffe2x", "fixture", name, "-o", str(directory), "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"generated {name}: {model.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s")
    print(f"\n{name}: {model.stat().st_size / 1e6:.1f} MB; {os.cpu_count()} CPU(s)")
    modes = [("logits", [])] + ([("per-layer", ["--per-layer"])] if opts.per_layer else [])
    for mode, extra in modes:
        for i in range(opts.repeat):
            report = scratch / f"report-{name}-{mode}-{i}.json"
            args = ["validate", str(model), "--prototxt", str(deploy), "--json", str(report), "-q", "--force", *extra]
            if opts.frameworks:
                args += ["--frameworks", opts.frameworks]
            wall, tree, single, cpu, rc, err = run(args)
            if not report.exists():
                print(f"{mode}: exit {rc}, no report: {err.strip().splitlines()[-1:]}")
                continue
            data = json.loads(report.read_text())
            n = data["input"]["shape"][0]
            rss, target = max(tree, single), TARGETS.get((name, mode))
            verdict = "" if target is None else f" ({'within' if rss <= target else 'OVER'} the {target} MB target)"
            print(f"\n{name} {mode}: {wall:.1f}s wall (fresh process, imports included), {cpu:.1f}s CPU (all its "
                  f"processes), exit {rc}, {n} photos, validate's own timer {data['seconds']:.1f}s")
            print(f"  peak RSS {rss:.0f} MB{verdict}: process tree {tree:.0f} MB (sum, sampled every 50 ms), "
                  f"largest single process {single:.0f} MB (wait4)")
            print(f"  {'framework':<10} {'status':<6} {'write+load s':>12} {'run s':>8} {'max rel':>9}")
            for f in data["frameworks"]:
                prep = "-" if f["prepare_seconds"] is None else f"{f['prepare_seconds']:.1f}"
                runs = "-" if f["run_seconds"] is None else f"{f['run_seconds']:.1f}"
                rel = "-" if f["max_rel"] is None else f"{f['max_rel']:.1e}"
                print(f"  {f['name']:<10} {f['status']:<6} {prep:>12} {runs:>8} {rel:>9}")


if __name__ == "__main__":
    main()
