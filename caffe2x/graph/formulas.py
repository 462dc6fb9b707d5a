"""Caffe formulas that depend only on static shapes, shared by the numpy reference
(:mod:`caffe2x.layers`) and the targets, which turn them into constants (PriorBox's boxes, Interp's
source positions and weights). Kept outside :mod:`caffe2x.layers` so targets never import a layer family.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from caffe2x.graph.ir import pool_output_size

f32 = np.float32


def prior_offsets(attrs: dict[str, Any]) -> list[tuple[float, float]]:
    """The (offset_h, offset_w) box centres of a cell: TextBoxes' pairs, else ``offset`` for both."""
    pairs = attrs.get("offsets")
    if pairs:
        return [(float(h), float(w)) for h, w in pairs]
    return [(float(attrs["offset"]), float(attrs["offset"]))]


def num_priors(attrs: dict[str, Any]) -> int:
    """Boxes per feature-map cell: every size at every centre."""
    sizes = len(attrs["aspect_ratios"]) * len(attrs["min_sizes"]) + len(attrs["max_sizes"])
    return sizes * len(prior_offsets(attrs))


def prior_box_sizes(attrs: dict[str, Any]) -> list[tuple[float, float]]:
    """(width, height) of each prior of one cell, in Caffe's order, as Caffe's floats hold them."""
    sizes: list[tuple[float, float]] = []
    for s, m in enumerate(attrs["min_sizes"]):
        sizes.append((float(m), float(m)))
        if attrs["max_sizes"]:
            side = float(f32(math.sqrt(m * attrs["max_sizes"][s])))
            sizes.append((side, side))
        for ar in attrs["aspect_ratios"]:
            if abs(ar - 1.0) < 1e-6:
                continue
            root = f32(math.sqrt(ar))
            sizes.append((float(f32(f32(m) * root)), float(f32(f32(m) / root))))
    return sizes


def prior_follows_input(attrs: dict[str, Any]) -> bool:
    """Whether PriorBox's image size comes from its image input at run time (no img_size / img_h /
    img_w: Caffe's ``PriorBoxLayer::Forward`` reads ``bottom[1]``'s H and W), so the net takes any
    size there; a given image size pins the input size it was read at. A graph stored before the rule
    was kept pins it too."""
    rule = attrs.get("rule")
    return bool(rule) and rule["img"] == "input"


def prior_attrs(attrs: dict[str, Any], feature: Sequence[int], image: Sequence[int] | None) -> dict[str, Any]:
    """PriorBox's attrs for a feature map shaped ``feature`` and an image input shaped ``image``: the
    image size from the image input and the steps as image over feature size (as float32), each where
    Caffe computes them at run time (see :func:`prior_follows_input`)."""
    if not prior_follows_input(attrs) or image is None:
        return attrs
    img = [int(image[2]), int(image[3])]
    step = list(attrs["step"])
    if attrs["rule"]["step"] == "derived":
        step = [float(f32(img[0]) / f32(feature[2])), float(f32(img[1]) / f32(feature[3]))]
    return {**attrs, "img": img, "step": step}


def prior_boxes(attrs: dict[str, Any], height: int, width: int) -> np.ndarray:
    """PriorBox's output ``(1, 2, height*width*num_priors*4)`` for a ``height x width`` feature map."""
    img_h, img_w = attrs["img"]
    step_h, step_w = f32(attrs["step"][0]), f32(attrs["step"][1])
    offs = np.array(prior_offsets(attrs), dtype=np.float32)     # (J, 2): centres, size-major then centre
    sizes = np.array(prior_box_sizes(attrs), dtype=np.float64)  # (P, 2): float32 values
    cx = ((np.arange(width, dtype=np.float32)[:, None] + offs[None, :, 1]) * step_w).astype(np.float64)   # (W, J)
    cy = ((np.arange(height, dtype=np.float32)[:, None] + offs[None, :, 0]) * step_h).astype(np.float64)  # (H, J)
    shape = (height, width, len(sizes), len(offs))
    cxg = np.broadcast_to(cx[None, :, None, :], shape)
    cyg = np.broadcast_to(cy[:, None, None, :], shape)
    bw, bh = sizes[:, 0][:, None], sizes[:, 1][:, None]
    boxes = np.stack([(cxg - bw / 2.0) / img_w, (cyg - bh / 2.0) / img_h,
                      (cxg + bw / 2.0) / img_w, (cyg + bh / 2.0) / img_h], axis=-1).astype(np.float32)
    boxes = boxes.reshape(-1)
    if attrs["clip"]:
        boxes = np.clip(boxes, 0.0, 1.0)
    var = np.asarray(attrs["variance"], dtype=np.float32)
    variances = np.tile(var if var.size == 4 else np.repeat(var, 4), boxes.size // 4)
    return np.stack([boxes, variances])[None].astype(np.float32)


def interp_axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output position along one axis: (index, next index, weight of index, weight of next), with
    Caffe's float32 arithmetic (``r = float(src - 1) / (dst - 1)``, ``pos = r * i``, truncation)."""
    r = f32(f32(src - 1) / f32(dst - 1)) if dst > 1 else f32(0)
    pos = (r * np.arange(dst, dtype=np.float32)).astype(np.float32)
    i0 = pos.astype(np.int64)
    step = (i0 < src - 1).astype(np.int64)
    lam1 = (pos - i0.astype(np.float32)).astype(np.float32)
    return i0, i0 + step, (f32(1) - lam1).astype(np.float32), lam1


def power_constant(attrs: dict[str, Any]) -> float | None:
    """The constant Caffe's Power writes when ``power * scale == 0`` (it then ignores the input): 1 for
    power 0, else ``shift ** power``; None when the input matters."""
    power, scale, shift = attrs["power"], attrs["scale"], attrs["shift"]
    if f32(power) * f32(scale) != 0:
        return None
    return 1.0 if power == 0 else float(np.power(f32(shift), f32(power)))


def pool_window(h: int, w: int, kernel: Any, stride: Any, pad: Any, ceil: bool,
                global_pooling: bool) -> tuple[int, int, int, int, int, int, int, int, int, int]:
    """Caffe's pooling geometry on an ``h x w`` plane: ``(kh, kw, sh, sw, ph, pw, oh, ow, rh, rw)``.

    ``global_pooling`` pools the whole plane; ``oh, ow`` are Caffe's (ceil-mode) output sizes and
    ``rh, rw`` the bottom/right padding after which exactly ``oh x ow`` windows fit -- what every
    framework layer that pads and then pools without rounding needs. Copied verbatim into generated
    torch code beside ``pool_output_size``, so it uses nothing else.
    """
    if global_pooling:
        (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
    else:
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh = pool_output_size(h, kh, sh, ph, ceil)
    ow = pool_output_size(w, kw, sw, pw, ceil)
    rh = max(0, (oh - 1) * sh + kh - h - ph)
    rw = max(0, (ow - 1) * sw + kw - w - pw)
    return kh, kw, sh, sw, ph, pw, oh, ow, rh, rw
