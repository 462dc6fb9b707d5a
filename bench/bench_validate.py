#!/usr/bin/env python
"""Speed and memory of a whole ``caffe2x validate`` of the synthetic ResNet-50 on the packaged photos.

Each run is a fresh ``caffe2x validate`` process (import time of caffe2x, torch, tensorflow and
onnxruntime included, as a user waits for it) over every installed framework; wall time and peak RSS
(``wait4``'s rusage of the child) are printed, then the per-framework times from the run's JSON report
(write + load back, run). ``--per-layer`` also times a run with every layer's output compared.
Usage::

    python bench/bench_validate.py [--frameworks numpy,torch,keras,onnx] [--per-layer] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MB, exit code, stderr) of ``python -m caffe2x.cli ARGS``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "caffe2x.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frameworks", help="comma-separated (default: every installed one)")
    ap.add_argument("--per-layer", action="store_true", help="also time a --per-layer run")
    ap.add_argument("--repeat", type=int, default=1)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "caffe2x.cli", "fixture", "resnet50", "-o", tmp, "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        model, deploy = Path(tmp) / "resnet50.caffemodel", Path(tmp) / "resnet50-deploy.prototxt"
        print(f"synthetic ResNet-50: {model.stat().st_size / 1e6:.1f} MB, written in {time.perf_counter() - t:.1f}s; "
              f"{os.cpu_count()} CPU(s)")
        modes = [("logits", [])] + ([("per-layer", ["--per-layer"])] if opts.per_layer else [])
        for mode, extra in modes:
            for i in range(opts.repeat):
                report = Path(tmp) / f"report-{mode}-{i}.json"
                args = ["validate", str(model), "--prototxt", str(deploy), "--json", str(report), "-q", *extra]
                if opts.frameworks:
                    args += ["--frameworks", opts.frameworks]
                wall, rss, rc, err = run(args)
                if not report.exists():
                    print(f"{mode}: exit {rc}, no report: {err.strip().splitlines()[-1:]}")
                    continue
                data = json.loads(report.read_text())
                n = data["input"]["shape"][0]
                print(f"\n{mode}: {wall:.1f}s wall (fresh process, imports included), peak RSS {rss:.0f} MB, "
                      f"exit {rc}, {n} photos, reference+compare inside the run: {data['seconds']:.1f}s")
                print(f"  {'framework':<10} {'status':<6} {'write+load s':>12} {'run s':>8} {'max rel':>9}")
                for f in data["frameworks"]:
                    prep = "-" if f["prepare_seconds"] is None else f"{f['prepare_seconds']:.1f}"
                    runs = "-" if f["run_seconds"] is None else f"{f['run_seconds']:.1f}"
                    rel = "-" if f["max_rel"] is None else f"{f['max_rel']:.1e}"
                    print(f"  {f['name']:<10} {f['status']:<6} {prep:>12} {runs:>8} {rel:>9}")


if __name__ == "__main__":
    main()
