#!/usr/bin/env python
"""Is a deep net's gap to OpenCV rounding? Each layer of a generated net (random weights, one input) in
three runs: the numpy reference (float32), OpenCV's Caffe importer (float32) and the torch target in
float64 (``module.double()``, the reference's formulas with 29 more mantissa bits). If both float32 runs
sit about equally far from float64 and their gap grows smoothly with depth, the gap is rounding.

    python bench/float64_drift.py [googlenet|squeezenet|...|DEPLOY.prototxt] [--every 5]

(a prototxt: its net with seeded weights, e.g. Inception-v4's public deploy file).

Prints, for every ``--every``-th compared layer: depth, name, max relative difference of the reference
and of OpenCV to float64, and of the two to each other (relative to the layer's largest magnitude).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def main() -> None:
    import cv2
    import torch

    from caffe2x import fixtures, load
    from caffe2x.fixtures import zoo
    from caffe2x.graph.reference import execute
    from caffe2x.targets.torch import to_module

    parser = argparse.ArgumentParser()
    parser.add_argument("net", nargs="?", default="googlenet")
    parser.add_argument("--every", type=int, default=5)
    args = parser.parse_args()
    text = Path(args.net).read_text() if args.net.endswith(".prototxt") else getattr(zoo, f"{args.net}_prototxt")()
    with tempfile.TemporaryDirectory() as tmp:
        deploy, model = Path(tmp) / "net.prototxt", Path(tmp) / "net.caffemodel"
        deploy.write_text(text)
        model.write_bytes(fixtures.synthesize(text))
        graph = load(model, deploy)
        (name, shape), = graph.inputs.items()
        x = np.random.default_rng(0).uniform(-100, 100, (1, *shape[1:])).astype(np.float32)
        ref = execute(graph, x)
        layers = [n for n in graph.nodes if n.op not in ("ReLU", "Dropout")]
        outputs = [n.outputs[0] for n in layers]
        module = to_module(graph, [graph.blob_name(v) for v in outputs]).double().eval()
        with torch.no_grad():
            got = module({name: torch.from_numpy(x.astype(np.float64))})
        net = cv2.dnn.readNetFromCaffe(str(deploy), str(model))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.enableWinograd(False)
        net.setInput(x, name)
        theirs = dict(zip([n.name for n in layers], net.forward([n.name for n in layers])))
    print(f"{'depth':>5}  {'layer':<28} {'ref32-f64':>10} {'cv32-f64':>10} {'ref32-cv32':>10}")
    for depth, (node, value) in enumerate(zip(layers, outputs), 1):
        if depth % args.every and depth != len(layers):
            continue
        f64 = got[graph.blob_name(value)].numpy()
        r, c = ref[value], theirs[node.name].reshape(ref[value].shape)
        print(f"{depth:>5}  {node.name:<28} {rel(r, f64):>10.2e} {rel(c, f64):>10.2e} {rel(r, c):>10.2e}")


if __name__ == "__main__":
    main()
