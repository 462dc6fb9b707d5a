#!/usr/bin/env python
"""Speed and memory of ``caffe2x convert`` on the synthetic 102 MB ResNet-50, per target.

Each conversion runs as a fresh ``caffe2x`` process (import time included, as a user waits for it);
wall time and peak RSS (from ``wait4``'s rusage) are printed, plus whether torch / tensorflow were
imported. Usage::

    python bench/bench_convert.py [--targets safetensors,torch,keras,onnx] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import sys, runpy
sys.argv = ["caffe2x"] + sys.argv[1:]
try:
    from caffe2x.cli import main
    rc = main(sys.argv[1:])
finally:
    heavy = [m for m in ("torch", "tensorflow") if m in sys.modules]
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(rc)
"""


def run(args: list[str]) -> tuple[float, float, str, int]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PROBE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    heavy = next((l.split("=", 1)[1] for l in err.splitlines() if l.startswith("HEAVY=")), "?")
    return wall, usage.ru_maxrss / 1024, heavy, os.waitstatus_to_exitcode(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="safetensors,torch,keras,onnx")
    ap.add_argument("--repeat", type=int, default=1)
    opts = ap.parse_args()
    suffix = {"safetensors": ".safetensors", "torch": ".pt", "keras": ".h5", "onnx": ".onnx"}
    with tempfile.TemporaryDirectory() as tmp:
        # synthesise in a child process: a forked child's peak RSS includes the parent's pages
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "caffe2x", "fixture", "resnet50", "-o", tmp, "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        model, deploy = Path(tmp) / "resnet50.caffemodel", Path(tmp) / "resnet50-deploy.prototxt"
        print(f"synthetic ResNet-50: {model.stat().st_size / 1e6:.1f} MB written in {time.perf_counter() - t:.1f}s")
        print(f"{'target':<12} {'wall s':>8} {'peak RSS MB':>12} {'output MB':>10}  imported")
        for target in opts.targets.split(","):
            for _ in range(opts.repeat):
                out = Path(tmp) / f"out{suffix[target]}"
                wall, rss, heavy, rc = run(["convert", str(model), "--prototxt", str(deploy), "--to", target,
                                            "-o", str(out), "-q"])
                size = out.stat().st_size / 1e6 if out.exists() else float("nan")
                status = "" if rc == 0 else f"  (exit {rc})"
                print(f"{target:<12} {wall:>8.2f} {rss:>12.0f} {size:>10.1f}  {heavy or '-'}{status}")
                out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
