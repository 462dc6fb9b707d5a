#!/usr/bin/env python
"""Are a masked net's unpooling differences tie flips? For each MAX pooling with a mask top (ENet,
SegNet), compare the mask of the numpy reference with the torch target's on the same input, and say
for the windows where they differ how far apart the two chosen cells are in the reference's own values
(a near-tie is within float rounding of the pooling input), how many were exact ties on either side,
and whether each side's mask is the first maximum of its *own* values and each Upsample the scatter of
its own inputs (so the pooling and unpooling themselves are right and only rounding broke a tie).

    python bench/unpool_tie_flips.py DEPLOY.prototxt [--image N] [--seed S]

The net gets seeded weights (``fixtures.synthesize``); the input is the N-th default photo,
preprocessed as ``caffe2x validate`` does. E.g. ENet's public ``enet_deploy_final.prototxt``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def first_max_mask(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """The flat index of each window's first maximum (row-major), Caffe's strict ``>`` scan (no pad:
    the maps ENet and SegNet pool)."""
    n, c, h, w = x.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    best = np.full((n, c, oh, ow), -np.inf, np.float32)
    index = np.zeros((n, c, oh, ow), np.int64)
    for dh in range(kernel):
        for dw in range(kernel):
            v = x[:, :, dh:dh + stride * oh:stride, dw:dw + stride * ow:stride]
            better = v > best
            best = np.where(better, v, best)
            rows = (np.arange(oh) * stride + dh)[:, None]
            cols = (np.arange(ow) * stride + dw)[None, :]
            index = np.where(better, rows * w + cols, index)
    return index


def main() -> None:
    import torch

    import caffe2x
    from caffe2x import fixtures
    from caffe2x.graph.reference import execute
    from caffe2x.targets.torch import to_module
    from caffe2x.validation.preprocess import find_images, image_batch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prototxt")
    parser.add_argument("--image", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    text = Path(args.prototxt).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "net.caffemodel"
        model.write_bytes(fixtures.synthesize(text, args.seed))
        graph = caffe2x.load(model, args.prototxt)
    (name, shape), = graph.inputs.items()
    x = image_batch(find_images()[args.image:args.image + 1], shape[2], shape[3])
    ref = execute(graph, {name: x})
    blob = {v: k for k, v in graph.blobs.items()}
    pools = [n for n in graph.nodes if n.op == "PoolingWithMask"]
    ups = [n for n in graph.nodes if n.op == "Unpooling"]
    wanted = sorted({blob.get(v, v) for n in pools + ups for v in [*n.inputs, *n.outputs]})
    torch.set_num_threads(1)
    with torch.no_grad():
        out = to_module(graph, wanted)({name: torch.from_numpy(x)})
    got = {graph.blobs.get(k, k): v.numpy() for k, v in out.items()}
    for node in pools:
        (k, _), (s, _) = node.attrs["kernel"], node.attrs["stride"]
        xin_r, xin_t = ref[node.inputs[0]], got[node.inputs[0]]
        mask_r, mask_t = ref[node.outputs[1]], got[node.outputs[1]]
        flips = np.argwhere(mask_r != mask_t)
        flat_r, flat_t = (a.reshape(*a.shape[:2], -1) for a in (xin_r, xin_t))
        gap = np.array([abs(flat_r[n, c, int(mask_r[n, c, i, j])] - flat_r[n, c, int(mask_t[n, c, i, j])])
                        for n, c, i, j in flips]) if len(flips) else np.zeros(1)
        exact_r = sum(flat_r[n, c, int(mask_r[n, c, i, j])] == flat_r[n, c, int(mask_t[n, c, i, j])] for n, c, i, j in flips)
        exact_t = sum(flat_t[n, c, int(mask_r[n, c, i, j])] == flat_t[n, c, int(mask_t[n, c, i, j])] for n, c, i, j in flips)
        print(f"{node.name}: {len(flips)} of {mask_r.size} windows choose another cell; chosen cells differ by "
              f"<= {gap.max():.2g} in the reference's values (its input differs from torch's by "
              f"<= {np.abs(xin_r - xin_t).max():.2g}); exact ties: {exact_r} in the reference's values, {exact_t} "
              f"in torch's; first maximum of its own values: reference "
              f"{np.array_equal(first_max_mask(xin_r, k, s), mask_r)}, torch {np.array_equal(first_max_mask(xin_t, k, s), mask_t)}")
    for node in ups:
        vals, mask, up = got[node.inputs[0]], got[node.inputs[1]], got[node.outputs[0]]
        scat = np.zeros((*up.shape[:2], up.shape[2] * up.shape[3]), np.float32)
        for n in range(up.shape[0]):
            for c in range(up.shape[1]):
                scat[n, c, mask[n, c].ravel().astype(np.int64)] = vals[n, c].ravel()
        print(f"{node.name}: torch's output is the scatter of its own inputs: "
              f"{np.array_equal(scat.reshape(up.shape), up)}; vs the reference max abs "
              f"{np.abs(up - ref[node.outputs[0]]).max():.3g} (max |ref| {np.abs(ref[node.outputs[0]]).max():.3g})")


if __name__ == "__main__":
    main()
