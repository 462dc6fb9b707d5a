"""Telling "the conversion is wrong" from "near-ties of a masked MAX pooling flipped" (ENet, SegNet).

A MAX pooling whose mask feeds an Upsample (unpooling) turns a float rounding difference into a
displacement: where two cells of a window are nearly equal, the reference and a framework, whose
pooling inputs differ by rounding, may each pick another cell, and the unpooling then puts the value
in another place. Each side is right for its own values, but the logits differ by as much as the
values (ENet with seeded weights: max rel 0.18). A looser tolerance would hide real errors; instead,
when a framework fails the comparison on such a net, validate proves the cause or fails it:

1. The framework's child runs the failing images again with the mask blobs as extra outputs
   (:class:`TieRequest`, :func:`caffe2x.validation.framework_run.run_job`); its logits of that run
   are the ones judged.
2. The numpy reference runs on those images with each masked pooling's choice **pinned** to the
   framework's mask (:func:`check_ties`): the pooled value is the reference's *own* input at the
   framework's chosen cell, the mask the framework's. Downstream layers are the reference's.
3. The framework passes only if (a) every window where the masks differ is a near-tie in the
   reference's own pooling input: the framework's cell lies in the window and
   ``x[ref choice] - x[fw choice] <= NEAR_TIE_FACTOR * (atol + rtol * max|x|)``, and (b) its logits agree
   with the pinned reference's within ``rtol``/``atol`` with identical top-5.

Why that bound: validate accepts a value within ``atol + rtol * max|x|`` of the reference's (the
per-layer rule). If a framework's pooling input is within ``e`` of the reference's everywhere and it
chose cell ``j`` over the reference's ``i``, then ``x'_j >= x'_i``, so ``x_i - x_j <= 2e``: a flip
between cells further apart than twice the tolerance cannot come from a pooling input within
tolerance, and is a wrong conversion upstream (or a wrong pooling). A wrong layer after the pooling
still fails (b), since the pinned reference runs the reference's own downstream layers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffe2x.graph.ir import Graph, Node
from caffe2x.validation.comparison import Comparison, compare_logits, comparison_problem, topk

#: a flip is a near-tie when the two cells' reference values differ by at most this many times the
#: per-element tolerance ``atol + rtol * max|pooling input|`` (2: each of the two cells may be off by
#: the tolerance in the framework; see the module docstring)
NEAR_TIE_FACTOR = 2.0


def masked_poolings(graph: Graph) -> list[Node]:
    """The MAX poolings whose mask top some layer reads (an Upsample by mask)."""
    read = {v for node in graph.nodes for v in node.inputs}
    return [n for n in graph.nodes if n.op == "PoolingWithMask" and len(n.outputs) > 1 and n.outputs[1] in read]


@dataclass
class TieRequest:
    """What a framework's child needs to re-run its failing slices with the masks exposed (picklable)."""

    masks: list[str]                 # the mask values to expose
    ref_topk: list[list[int]]
    rtol: float
    atol: float

    def failing(self, batches: Sequence[tuple[int, int]], logits: np.ndarray, ref_logits: np.ndarray) -> list[int]:
        """The slices whose logits break the pass rule (the whole batch's ``max|ref|`` as the scale, as
        :func:`~caffe2x.validation.comparison.compare_logits` over the batch; or another top-5)."""
        bound = self.atol + self.rtol * (float(np.max(np.abs(ref_logits))) if ref_logits.size else 0.0)
        out = []
        for i, (start, stop) in enumerate(batches):
            whole = (start, stop) == (0, len(logits)) or len(batches) == 1
            got, ref = (logits, ref_logits) if whole else (logits[start:stop], ref_logits[start:stop])
            rows = self.ref_topk if whole else self.ref_topk[start:stop]
            if got.shape != ref.shape or not np.all(np.isfinite(got)):
                out.append(i)
            elif float(np.max(np.abs(got.astype(np.float64) - ref))) > bound or topk(got) != rows:
                out.append(i)
        return out


def tie_request(graph: Graph, ref_topk: list[list[int]], rtol: float, atol: float) -> TieRequest | None:
    """A request for the net's consumed masks, or None when it has no masked pooling."""
    masks = [n.outputs[1] for n in masked_poolings(graph)]
    return TieRequest(masks, ref_topk, rtol, atol) if masks else None


@dataclass
class TieRun:
    """One re-run slice of a framework: its logits and masks from the same forward pass."""

    start: int
    stop: int
    logits: np.ndarray
    masks: dict[str, np.ndarray]


@dataclass
class PoolingFlips:
    """What the masks of one pooling layer did over the re-run images."""

    layer: str
    windows: int = 0
    flips: int = 0                   # windows where the framework chose another cell
    not_near: int = 0                # of them, pairs further apart than the bound
    bad_index: int = 0               # of them, an index outside the window (or not an integer)
    max_gap: float = 0.0             # max x[ref choice] - x[fw choice] over the flips
    bound: float = float("inf")      # the near-tie bound (the smallest over the images)
    missing: bool = False            # the framework did not return (a well-shaped) mask

    @property
    def passed(self) -> bool:
        return not (self.not_near or self.bad_index or self.missing)

    def to_dict(self) -> dict[str, Any]:
        from caffe2x.validation.results import num

        return {"layer": self.layer, "windows": self.windows, "flips": self.flips, "not_near_ties": self.not_near,
                "bad_index": self.bad_index, "max_gap": num(self.max_gap), "bound": num(self.bound),
                "missing": self.missing}


@dataclass
class TieCheck:
    """The verdict of :func:`check_ties` for one framework."""

    images: list[int]
    poolings: list[PoolingFlips]
    pinned: Comparison | None = None  # the framework's logits against the pinned reference's
    rtol: float = 0.0
    atol: float = 0.0
    factor: float = NEAR_TIE_FACTOR
    notes: list[str] = field(default_factory=list)

    @property
    def flips(self) -> int:
        return sum(p.flips for p in self.poolings)

    @property
    def passed(self) -> bool:
        return (self.flips > 0 and all(p.passed for p in self.poolings)
                and self.pinned is not None and self.pinned.passed)

    def problem(self) -> str:
        """Why the flips do not explain the difference (one clause)."""
        for p in self.poolings:
            if p.missing:
                return f"it returned no usable mask for {p.layer!r}"
            if p.bad_index:
                return f"{p.bad_index} {p.layer!r} mask index(es) point outside their window"
            if p.not_near:
                return (f"{p.not_near:,} of {p.flips:,} {p.layer!r} mask flips are not near-ties (cells up to "
                        f"{p.max_gap:.2g} apart in the reference's values, bound {p.bound:.2g})")
        if self.flips == 0:
            return "its masks equal the reference's, so no tie flip explains the difference"
        if self.pinned is None:
            return "; ".join(self.notes) or "it re-ran no image"
        return (f"with its {self.flips:,} mask choices pinned the reference still differs: "
                f"{comparison_problem(self.pinned, self.rtol, self.atol)}")

    def summary(self) -> str:
        """The note of a pass: which flips, how near, and how close the pinned reference is."""
        where = ", ".join(f"{p.flips:,} in {p.layer} (of {p.windows:,} windows; chosen cells within "
                          f"{p.max_gap:.2g}, bound {p.bound:.2g})" for p in self.poolings if p.flips)
        assert self.pinned is not None
        return (f"agrees up to {self.flips:,} near-tie flip(s) of masked MAX pooling: {where}; with its choices "
                f"pinned the reference agrees to max rel {self.pinned.max_rel:.1e}, top-5 "
                f"{self.pinned.topk_agree}/{len(self.pinned.topk)}")

    def to_dict(self) -> dict[str, Any]:
        from caffe2x.validation.results import num

        c = self.pinned
        return {"passed": self.passed, "images": list(self.images), "flips": self.flips,
                "near_tie_factor": self.factor,
                "bound_rule": "x[ref choice] - x[fw choice] <= near_tie_factor * (atol + rtol * max|pooling input|)",
                "poolings": [p.to_dict() for p in self.poolings],
                "pinned": None if c is None else {"max_abs": num(c.max_abs), "max_rel": num(c.max_rel),
                                                  "top5_agree": c.topk_agree, "within_tolerance": c.within},
                "note": self.summary() if self.passed else self.problem()}


def _window_bounds(node: Node, x: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Each output's clipped window ``[h0, h1) x [w0, w1)`` in the input, as Caffe's MAX pooling scans it."""
    _, _, h, w = x.shape
    a = node.attrs
    if a["global_pooling"]:
        (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
    else:
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    hs = np.arange(out_hw[0]) * sh - ph
    ws = np.arange(out_hw[1]) * sw - pw
    return (np.maximum(hs, 0)[:, None], np.minimum(hs + kh, h)[:, None],
            np.maximum(ws, 0)[None, :], np.minimum(ws + kw, w)[None, :])


def pinned_pooling(fw_mask: np.ndarray | None, flips: PoolingFlips, rtol: float, atol: float,
                   factor: float = NEAR_TIE_FACTOR) -> Callable[[Node, list[np.ndarray], Graph], list[np.ndarray]]:
    """The reference's op for one masked pooling with its choices pinned to ``fw_mask``; counts what the
    masks did into ``flips``. Where the framework's index is unusable the reference's own choice stays
    (the check has failed then anyway)."""
    from caffe2x.graph.reference import OPS

    def run(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
        y, mask = OPS.lookup("PoolingWithMask", node.name)(node, ins, graph)
        flips.windows += mask.size
        if fw_mask is None or np.shape(fw_mask) != mask.shape:
            flips.missing = True
            return [y, mask]
        x = ins[0]
        n, c, h, w = x.shape
        fw = np.asarray(fw_mask, dtype=np.float64)
        differ = fw != mask
        ok_number = np.isfinite(fw) & (fw == np.round(fw)) & (fw >= 0) & (fw < h * w)
        idx = np.where(ok_number, fw, 0).astype(np.int64)
        h0, h1, w0, w1 = _window_bounds(node, x, mask.shape[2:])
        rows, cols = idx // w, idx % w
        valid = ok_number & (rows >= h0) & (rows < h1) & (cols >= w0) & (cols < w1)
        use = np.where(valid, idx, mask.astype(np.int64))
        flat = x.reshape(n, c, h * w)
        pinned = np.take_along_axis(flat, use.reshape(n, c, -1), axis=2).reshape(mask.shape)
        flipped = differ & valid
        gap = (y.astype(np.float64) - pinned)[flipped]  # >= 0: y is the window's maximum
        bound = factor * (atol + rtol * (float(np.max(np.abs(x))) if x.size else 0.0))
        flips.flips += int(np.count_nonzero(differ))
        flips.bad_index += int(np.count_nonzero(differ & ~valid))
        flips.not_near += int(np.count_nonzero(gap > bound))
        flips.max_gap = max(flips.max_gap, float(gap.max()) if gap.size else 0.0)
        flips.bound = min(flips.bound, bound)
        return [pinned.astype(np.float32), np.where(valid, fw, mask).astype(np.float32)]

    return run


def check_ties(graph: Graph, x: np.ndarray, value: str, runs: Sequence[TieRun], rtol: float, atol: float,
               factor: float = NEAR_TIE_FACTOR) -> TieCheck:
    """Run the reference on each re-run slice with every consumed mask pinned to the framework's, and
    judge (a) the flips and (b) the framework's logits against the pinned reference's (see the module)."""
    from caffe2x.graph.reference import execute

    nodes = masked_poolings(graph)
    flips = {n.name: PoolingFlips(n.name) for n in nodes}
    pinned_parts, got_parts, images = [], [], []
    for r in runs:
        override = {n.name: pinned_pooling(r.masks.get(n.outputs[1]), flips[n.name], rtol, atol, factor)
                    for n in nodes}
        pinned_parts.append(execute(graph, x[r.start:r.stop], keep={value}, override=override)[value])
        got_parts.append(np.asarray(r.logits, dtype=np.float32))
        images.extend(range(r.start, r.stop))
    check = TieCheck(images, list(flips.values()), rtol=rtol, atol=atol, factor=factor)
    if runs:
        pinned = pinned_parts[0] if len(pinned_parts) == 1 else np.concatenate(pinned_parts)
        got = got_parts[0] if len(got_parts) == 1 else np.concatenate(got_parts)
        if got.shape == pinned.shape:
            check.pinned = compare_logits(got, pinned, topk(pinned), rtol, atol)
        else:
            check.notes.append(f"logits shape {list(got.shape)} differs from the reference's {list(pinned.shape)}")
    return check
