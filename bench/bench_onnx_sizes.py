#!/usr/bin/env python
"""What symbolic H and W cost an ONNX model at the size it was read at: onnxruntime (one thread, all
graph optimisations, warm-up excluded) on the model as caffe2x writes it (symbolic ``N, H, W``; pooling,
Crop, Interp, PriorBox and DetectionOutput computing their geometry in the graph) against the same
graph written with every input size fixed (``dynamic.plan`` returning no symbolic axis: constants, as
before issue 20), the two alternated over ``--rounds``, median ms per run of ``--repeat`` runs:

==========  ========================================================================================
net         what computes with sizes
==========  ========================================================================================
``fcn``     ``fcn_style``: ceil-mode pooling, Crop
``ssd``     ``ssd_mobilenet_style``: PriorBox from the data input, Flatten, DetectionOutput
``resize``  ``tests/helpers/resize_net.py``: Interp by each rule, LRN within, Reshape 0/-1, PriorBox
==========  ========================================================================================

Usage::

    python bench/bench_onnx_sizes.py [--repeat 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

import caffe2x  # noqa: E402
from caffe2x import fixtures  # noqa: E402
from caffe2x.caffe.reader import read_bytes  # noqa: E402
from caffe2x.targets.onnx import dynamic  # noqa: E402
from caffe2x.targets.onnx.model import to_onnx  # noqa: E402
from tests.helpers.resize_net import RESIZE_PROTOTXT  # noqa: E402


def graphs() -> dict[str, caffe2x.graph.ir.Graph]:
    return {"fcn": fixtures.graph("fcn_style"), "ssd": fixtures.graph("ssd_mobilenet_style"),
            "resize": read_bytes(fixtures.synthesize(RESIZE_PROTOTXT, seed=3), RESIZE_PROTOTXT)}


def session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def per_run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        sess.run(None, feeds)
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{'net':8} {'symbolic ms':>12} {'fixed ms':>10} {'ratio':>7}")
    for name, graph in graphs().items():
        symbolic = session(to_onnx(graph).SerializeToString())
        with mock.patch.object(dynamic, "plan", lambda g: ({}, {})):
            fixed = session(to_onnx(graph).SerializeToString())
        feeds = {k: np.random.default_rng(0).standard_normal(v).astype(np.float32) for k, v in graph.inputs.items()}
        for sess in (symbolic, fixed):
            per_run(sess, feeds, 20)
        times: dict[str, list[float]] = {"symbolic": [], "fixed": []}
        for _ in range(args.rounds):
            times["symbolic"].append(per_run(symbolic, feeds, args.repeat))
            times["fixed"].append(per_run(fixed, feeds, args.repeat))
        s, f = statistics.median(times["symbolic"]), statistics.median(times["fixed"])
        print(f"{name:8} {s:12.3f} {f:10.3f} {s / f:7.2f}")


if __name__ == "__main__":
    main()
