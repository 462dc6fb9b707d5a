"""Shared by the fine-tuning examples: the synthetic ResNet-50 and a generated three-class dataset.

Nothing here is needed to fine-tune your own model; it only makes the examples self-contained (no
download): ``synthetic_resnet50`` converts the built-in synthetic ResNet-50 (``caffe2x fixture
resnet50``), ``make_shapes`` draws coloured circles, squares and triangles.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import caffe2x
from caffe2x import fixtures

def parse_args(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    """The examples' shared options; the defaults depend on ``--quick``."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (32x32, few images)")
    ap.add_argument("--out", type=Path, default=Path("finetune-out"), help="where exports are written")
    ap.add_argument("--size", type=int, help="input size (default 80, 32 with --quick; 224 is the released model's)")
    ap.add_argument("--images", type=int, help="training images (default 180, 36 with --quick)")
    ap.add_argument("--epochs", type=int, help="default 3, 2 with --quick")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.size = args.size or (32 if args.quick else 80)
    args.images = args.images or (36 if args.quick else 180)
    args.epochs = args.epochs or (2 if args.quick else 3)
    return args


CLASSES = ("circle", "square", "triangle")
#: what the example freezes: everything up to the end of stage 4, so res5 and the new head train
FREEZE = "up-to:res4f"
HEAD = "fc1000"


def synthetic_resnet50(size: int, workdir: Path, caffemodel: bool = True) -> caffe2x.Graph:
    """The synthetic ResNet-50 converted for ``size x size`` inputs.

    ``caffemodel=True``: the fixture's ``.caffemodel`` (``caffe2x fixture resnet50``, 102 MB) is written to
    ``workdir`` and converted, exactly what a user does with KaimingHe's files. At a size other than 224
    the deploy prototxt gets that input size and ``pool5`` (AVE 7x7, which needs 224 input) becomes global
    average pooling -- the same computation at 224 -- and the caffemodel's blobs load into it by layer
    name. ``caffemodel=False`` (the examples' ``--quick`` mode) reads the same prototxt alone, with seeded
    calibrated weights: the same architecture without writing and parsing 102 MB.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "resnet50.caffemodel"
    if caffemodel and not model.exists():
        model, _ = fixtures.write_model("resnet50", workdir)
    text = fixtures.resnet_prototxt(50, (1, 3, size, size))
    seven = "\tpooling_param {\n\t\tkernel_size: 7\n\t\tstride: 1\n\t\tpool: AVE\n\t}"
    assert text.count(seven) == 1, "the fixture's pool5 changed; update synthetic_resnet50"
    if size != 224:
        text = text.replace(seven, "\tpooling_param {\n\t\tpool: AVE\n\t\tglobal_pooling: true\n\t}")
    deploy = workdir / f"resnet50-{size}-deploy.prototxt"
    deploy.write_text(text)
    return caffe2x.load(model if caffemodel else None, prototxt=deploy)


def make_shapes(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB uint8 images ``(n, size, size, 3)`` of one filled shape each and their labels (0 circle,
    1 square, 2 triangle), balanced; random colours, position, size, background and a little noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        r = rng.uniform(0.18, 0.32) * size
        cy, cx = rng.uniform(r, size - r, 2)
        dy, dx = (yy - cy) / r, (xx - cx) / r
        if label == 0:
            mask = dy ** 2 + dx ** 2 <= 1.0
        elif label == 1:
            mask = (np.abs(dy) <= 0.85) & (np.abs(dx) <= 0.85)
        else:  # upright triangle: below the two slanted edges, above the base
            mask = (dy <= 0.8) & (dy >= -1.0 + 2.0 * np.abs(dx))
        background = rng.uniform(0, 110, 3)
        colour = rng.uniform(120, 255, 3)
        img = np.where(mask[..., None], colour, background) + rng.normal(0, 8, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
