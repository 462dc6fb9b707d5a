#!/usr/bin/env python
"""Images per second of ``caffe2x evaluate`` on the synthetic ResNet-50, against the floor.

For each framework set (the numpy reference always runs, so ``torch`` means numpy + torch) this prints:

- **floor**: the frameworks' own bare batched forward, side by side in this process: the images
  preprocessed beforehand, then ``caffe2x.run`` (numpy), ``module(x)`` under ``torch.no_grad`` at
  torch's default threads, ``model(x, training=False)`` (Keras), an onnxruntime session with its default
  options, each on batches of ``--batch``; the floor of a set is ``images / sum of their times``;
- **local** and **ray**: ``caffe2x.evaluate`` with that engine (``--workers`` workers), *steady state*: the
  marginal rate between a run of ``--images`` and one of twice as many (so worker start-up, model
  loading and Ray's start cancel out), and the ratio ``floor / rate`` (issue 23's goal: within 1.25 x
  locally, Ray within 1.3 x of local). The end-to-end rate of the longer run (start-up included) too.

Usage::

    python bench/bench_evaluate.py [--frameworks numpy,torch,keras,onnx] [--sets each,all]
                                   [--engines local,ray] [--images 32] [--batch 16] [--workers 2] [--dir D]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` seeded 320x256 JPEGs (smooth colour fields, like photos to a decoder) and a Caffe list."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / f"val{count}.txt"
    if listing.exists():
        return listing
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:320] / 64.0
    lines = []
    for i in range(count):
        a = rng.uniform(0, 2 * np.pi, (3, 3))
        rgb = np.stack([127 + 120 * np.sin(xx * a[c, 0] + yy * a[c, 1] + a[c, 2]) for c in range(3)], -1)
        name = f"img{i:05d}.jpg"
        if not (folder / name).exists():
            Image.fromarray(rgb.astype(np.uint8)).save(folder / name, quality=90)
        lines.append(f"{name} {int(rng.integers(0, 1000))}")
    listing.write_text("\n".join(lines) + "\n")
    return listing


def floor_seconds(graph, x: np.ndarray, batch: int, fw: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds of the framework's own forward over ``x`` in batches (one warm-up batch first)."""
    import caffe2x
    from caffe2x.validation.comparison import logits_blob

    _, value, _ = logits_blob(graph)
    blob = graph.blob_name(value)
    parts = [x[s:s + batch] for s in range(0, len(x), batch)]
    if fw == "numpy":
        def step(b: np.ndarray) -> None:
            caffe2x.run(graph, b, outputs=[blob])
    elif fw == "torch":
        import torch

        module = caffe2x.to_torch(graph, outputs=blob).eval()

        def step(b: np.ndarray) -> None:
            with torch.no_grad():
                module(torch.from_numpy(b))
    elif fw == "keras":
        model = caffe2x.to_keras(graph, outputs=blob)

        def step(b: np.ndarray) -> None:
            model(b.transpose(0, 2, 3, 1), training=False)
    elif fw == "onnx":
        import onnxruntime as ort

        path = Path(tempfile.mkdtemp()) / "m.onnx"
        caffe2x.save(graph, path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def step(b: np.ndarray) -> None:
            sess.run(None, {name: b})
    else:
        raise SystemExit(f"unknown framework {fw}")
    step(parts[0])
    t = time.perf_counter()
    for b in parts:
        step(b)
    return time.perf_counter() - t


def evaluate_seconds(model: Path, deploy: Path, root: Path, listing: Path, fws: list[str], engine: str,
                     workers: int, batch: int) -> tuple[float, float, int]:
    """(wall seconds of the engine's part, images/s the report gives, images)."""
    import caffe2x

    report = caffe2x.evaluate(model, deploy, images=root, list_file=listing, frameworks=fws, engine=engine,
                              workers=workers, batch_size=batch)
    d = report.data
    return d["images"] / d["images_per_second"], d["images_per_second"], d["images"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frameworks", default="numpy,torch,keras,onnx")
    ap.add_argument("--sets", default="each,all", help="each: numpy + one framework at a time; all: all at once")
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", help="keep the model and images here between runs")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import caffe2x
    from caffe2x.fixtures import write_model
    from caffe2x.validation.preprocess import image_batch

    work = Path(args.dir or tempfile.mkdtemp(prefix="caffe2x-bench-evaluate-"))
    work.mkdir(parents=True, exist_ok=True)
    model, deploy = work / "resnet50.caffemodel", work / "resnet50-deploy.prototxt"
    if not model.exists():
        write_model("resnet50", work)
    root = work / "images"
    short = make_images(root, args.images)
    long = make_images(root, 2 * args.images)
    graph = caffe2x.load(model, deploy)
    names = [n.split(":")[0] for n in short.read_text().split("\n") if n]
    x = image_batch([root / n.split(" ")[0] for n in names], 224, 224)

    fws = [f for f in args.frameworks.split(",") if f]
    floors = {fw: floor_seconds(graph, x, args.batch, fw) for fw in dict.fromkeys(["numpy", *fws])}
    print(f"ResNet-50 (synthetic), {args.images} / {2 * args.images} images of 320x256, batch {args.batch}, "
          f"{args.workers} workers, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("bare forward, images/s: " + ", ".join(f"{fw} {args.images / s:.1f}" for fw, s in floors.items()))
    sets = []
    if "each" in args.sets:
        sets += [["numpy"]] + [["numpy", fw] for fw in fws if fw != "numpy"]
    if "all" in args.sets and len(fws) > 1:
        sets.append(list(dict.fromkeys(["numpy", *fws])))
    engines = [e for e in args.engines.split(",") if e]
    print(f"{'frameworks':<26} {'floor img/s':>11}" + "".join(
        f" {e + ' img/s':>11} {'floor/' + e:>9} {e + ' e2e':>9}" for e in engines)
        + ("  ray/local" if len(engines) == 2 else ""))
    for fs in sets:
        floor = args.images / sum(floors[f] for f in fs)
        row = f"{'+'.join(fs):<26} {floor:>11.2f}"
        rates = {}
        for engine in engines:
            t1, _, n1 = evaluate_seconds(model, deploy, root, short, fs, engine, args.workers, args.batch)
            t2, e2e, n2 = evaluate_seconds(model, deploy, root, long, fs, engine, args.workers, args.batch)
            rate = (n2 - n1) / (t2 - t1) if t2 > t1 else float("nan")
            rates[engine] = rate
            row += f" {rate:>11.2f} {floor / rate:>8.2f}x {e2e:>9.2f}"
        if len(rates) == 2:
            row += f"  {rates['local'] / rates['ray']:.2f}x"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
