#!/usr/bin/env python
"""Wall time of the numpy reference forward pass (``caffe2x.run``), median of ``--repeat`` runs.

Usage::

    python bench/bench_reference.py [--models resnet50,vgg16] [--batch 1] [--repeat 5] [--dir DIR] [--hw 200,200]

``--hw H,W`` also times the net fed another spatial size than it was read at (Caffe's reshape: every
shape recomputed for the input, then the same forward pass), beside the read size.

The synthetic models are generated with ``caffe2x fixture`` into ``--dir`` (kept there for reuse).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir")
    ap.add_argument("--hw", help="also run at this H,W (the net reshaped to it)")
    opts = ap.parse_args()
    import caffe2x

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(opts.dir or tmp)
        for name in opts.models.split(","):
            model, deploy = directory / f"{name}.caffemodel", directory / f"{name}-deploy.prototxt"
            if not model.exists():
                subprocess.run([sys.executable, "-m", "caffe2x", "fixture", name, "-o", str(directory), "-q"],
                               check=True, stdout=subprocess.DEVNULL)
            graph = caffe2x.load(model, deploy)
            (shape,) = graph.inputs.values()
            sizes = [tuple(shape[2:])] + ([tuple(int(v) for v in opts.hw.split(","))] if opts.hw else [])
            logits = graph.blob_name(graph.logits()[0])
            for hw in sizes:
                x = (np.random.default_rng(0).standard_normal((opts.batch, shape[1], *hw)) * 50).astype(np.float32)
                caffe2x.run(graph, x, outputs=logits)  # warm-up
                times, cpu = [], []
                for _ in range(opts.repeat):
                    t, c = time.perf_counter(), time.process_time()
                    caffe2x.run(graph, x, outputs=logits)
                    times.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                how = "read size" if hw == tuple(shape[2:]) else "reshaped"
                # CPU seconds of this process: on a machine busy with other work they move far less than the
                # wall (with CAFFE2X_BLAS_THREADS=1 no BLAS thread spins waiting for a core)
                print(f"{name} {opts.batch}x{shape[1]}x{'x'.join(map(str, hw))} ({how}): median "
                      f"{statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}) over "
                      f"{opts.repeat} runs; CPU median {statistics.median(cpu):.3f} s (min {min(cpu):.3f})")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
