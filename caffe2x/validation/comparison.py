"""Comparing a run with the reference: the pass rule of ``caffe2x validate``.

A run passes when ``max|logits - ref| <= atol + rtol * max|ref|`` (the defaults ``rtol = 1e-4``,
``atol = 0`` make it ``max|a - b| / max|b| <= 1e-4``, the measure :func:`caffe2x.graph.numeric.max_rel_error`
gives) **and** its top-5 classes are identical, in order, to the reference's on every image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import within

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 0.0
TOPK = 5


@dataclass
class Comparison:
    """Logits of one run against the reference's."""

    max_abs: float
    max_rel: float
    top1_agree: int
    topk_agree: int
    topk: list[list[int]]
    within: bool

    @property
    def passed(self) -> bool:
        return self.within and self.topk_agree == len(self.topk)


def logits_blob(graph: Graph) -> tuple[str, str, str]:
    """(blob, value, note): the input of the final Softmax when the net ends in one, else its output."""
    value, note = graph.logits()
    return graph.blob_name(value), value, note


def topk(logits: np.ndarray, k: int = TOPK) -> list[list[int]]:
    """Indices of the k largest logits per sample (descending; ties broken by the lower index)."""
    flat = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    k = min(k, flat.shape[1])
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return [[int(i) for i in row] for row in order]


def compare_logits(got: np.ndarray, ref: np.ndarray, ref_topk: list[list[int]], rtol: float, atol: float) -> Comparison:
    max_abs, max_rel, ok = within(got, ref, rtol, atol)
    tk = topk(got) if np.all(np.isfinite(got)) else [[-1] for _ in ref_topk]
    top1 = sum(int(a[0] == b[0]) for a, b in zip(tk, ref_topk))
    agree = sum(int(a == b) for a, b in zip(tk, ref_topk))
    return Comparison(max_abs, max_rel, top1, agree, tk, ok)


def fmt_tol(x: float) -> str:
    """A tolerance as short as it was typed: ``1e-4``, ``0``."""
    if x == 0:
        return "0"
    mant, exp = f"{x:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def comparison_problem(c: Comparison, rtol: float, atol: float) -> str:
    """What is wrong with a comparison, in one clause (``agree`` when nothing is)."""
    problems = []
    if not c.within:
        if not np.isfinite(c.max_abs):
            problems.append("contain NaN or infinity")
        else:
            problems.append(f"max rel {c.max_rel:.1e} (max abs {c.max_abs:.1e}) exceeds rtol {fmt_tol(rtol)}"
                            + (f" + atol {fmt_tol(atol)}" if atol else ""))
    n = len(c.topk)
    if c.topk_agree != n:
        problems.append(f"top-5 differs on {n - c.topk_agree}/{n} image(s)")
    return "; ".join(problems) or "agree"
