"""Image sets whose accuracy is known exactly, for the evaluate tests.

A colour classifier (global average pooling, then InnerProduct with seeded weights, then Softmax) sees a
constant-colour image as its BGR colour minus the mean, so its logits are ``W @ (bgr - mean) + b``,
computed here in float64 from the weights alone. Each image's label is the class at a chosen rank of its
own logits (rank 0: top-1 correct; 1..4: top-5 only; 5+: wrong), so the expected top-1 / top-5 counts
are known before any framework runs. Colours whose ranked logits come closer than :data:`MARGIN` are
redrawn, so float rounding in any framework cannot reorder them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = 10
MARGIN = 0.5
MEAN_BGR = np.array([103.94, 116.78, 123.68])
PROTOTXT = f'''name: "colour"
input: "data" input_shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: AVE global_pooling: true }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param {{ num_output: {CLASSES} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc" top: "prob" }}
'''
#: the rank of each image's label in its own logits, cycled over the images
RANKS = (0, 0, 1, 3, 0, 6, 4, 9, 0, 2)


@dataclass
class ColourSet:
    model: Path
    prototxt: Path
    root: Path
    listing: Path
    names: list[str]
    labels: list[int]
    top1: int      # images whose label is the top-1 class
    top5: int      # images whose label is in the top-5


def colour_model(directory: Path, seed: int = 3) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """(caffemodel, prototxt, W, b) of the colour classifier."""
    import caffe2x
    from caffe2x.fixtures import synthesize

    directory.mkdir(parents=True, exist_ok=True)
    prototxt = directory / "colour.prototxt"
    prototxt.write_text(PROTOTXT)
    model = directory / "colour.caffemodel"
    model.write_bytes(synthesize(PROTOTXT, seed=seed))
    graph = caffe2x.load(model, prototxt=prototxt)
    (fc,) = [n for n in graph.nodes if n.op == "InnerProduct"]
    w = np.asarray(graph.param(fc, "weight"), dtype=np.float64)
    b = np.asarray(graph.param(fc, "bias"), dtype=np.float64)
    return model, prototxt, w, b


def colour_set(directory: Path, count: int = 20, size: tuple[int, int] = (10, 12), seed: int = 0) -> ColourSet:
    """``count`` constant-colour PNGs under ``directory/images`` and Caffe's list ``val.txt`` for them."""
    from PIL import Image

    model, prototxt, w, b = colour_model(directory)
    rng = np.random.default_rng(seed)
    root = directory / "images"
    (root / "sub dir").mkdir(parents=True, exist_ok=True)
    names, labels, lines = [], [], []
    top1 = top5 = 0
    while len(names) < count:
        rgb = rng.integers(0, 256, 3)
        logits = w @ (rgb[::-1] - MEAN_BGR) + b
        order = np.argsort(-logits)
        if np.min(-np.diff(logits[order])) < MARGIN:
            continue
        rank = RANKS[len(names) % len(RANKS)]
        label = int(order[rank])
        top1 += rank == 0
        top5 += rank < 5
        name = f"sub dir/im {len(names):03d}.png" if len(names) % 3 == 0 else f"im{len(names):03d}.png"
        Image.fromarray(np.tile(rgb.astype(np.uint8), (*size, 1))).save(root / name)
        names.append(name)
        labels.append(label)
        lines.append(f"{name} {label}")
    listing = directory / "val.txt"
    listing.write_text("\n".join(lines) + "\n")
    return ColourSet(model, prototxt, root, listing, names, labels, int(top1), int(top5))


#: report fields that depend on the clock or on how the run was split, not on the figures
TIMING = ("seconds", "images_per_second", "resumed", "engine", "workers")


def figures(report) -> dict:  # type: ignore[no-untyped-def]
    """A report's figures: everything but :data:`TIMING`."""
    return {k: v for k, v in report.data.items() if k not in TIMING}
