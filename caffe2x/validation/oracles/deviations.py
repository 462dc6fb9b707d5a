"""Layers OpenCV's Caffe importer (4.x) is known to compute differently from Caffe.

A value computed through one of them cannot judge the reference: ``validate --oracle opencv`` reports
those layers instead of failing on them. The facts are those of ``docs/layers.md`` and
``docs/detection-resample-roi-layers.md`` ("Where OpenCV deviates"), each checked by a test against
OpenCV (and against Caffe's formula instead). Layers OpenCV does not implement at all (Threshold,
Upsample, BVLC's LSTM, ...) need no entry: OpenCV refuses the net and the oracle is skipped with its
message.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from caffe2x.graph.ir import Graph, Node

#: Caffe's (and OpenCV's) default MVN eps: with it both placements of eps agree to float rounding
MVN_DEFAULT_EPS = 1e-9


@dataclass(frozen=True)
class Deviation:
    layer: str     # Caffe layer name
    op: str        # caffe2x op (the Caffe type, or the family op: MeanVarNorm for MVN)
    what: str      # the setting OpenCV treats differently, e.g. "LRN k=2"
    why: str       # what OpenCV does instead, e.g. "OpenCV ignores k"

    def to_dict(self) -> dict[str, str]:
        return {"layer": self.layer, "op": self.op, "what": self.what, "why": self.why}


def _num(x: Any) -> str:
    return f"{float(x):g}"


def _lrn(n: Node, g: Graph) -> tuple[str, str] | None:
    k = float(n.attrs.get("k", 1.0))
    return None if k == 1.0 else (f"LRN k={_num(k)}", "OpenCV ignores k")


def _mvn(n: Node, g: Graph) -> tuple[str, str] | None:
    if 0 in n.attrs.get("axes", ()):  # Caffe's BatchNorm with use_global_stats: false
        return ("BatchNorm use_global_stats=false", "OpenCV uses the stored statistics")
    eps = float(n.attrs.get("eps", MVN_DEFAULT_EPS))
    if not n.attrs.get("normalize_variance") or math.isclose(eps, MVN_DEFAULT_EPS, rel_tol=1e-6):
        return None
    return (f"MVN eps={_num(eps)}", "OpenCV adds eps to the variance, Caffe to the standard deviation")


def _log(n: Node, g: Graph) -> tuple[str, str] | None:
    a = n.attrs
    if float(a.get("scale", 1)) == 1 and float(a.get("shift", 0)) == 0 and math.isclose(float(a.get("base_scale", 1)), 1.0,
                                                                                       rel_tol=1e-6):
        return None
    return ("Log with base/scale/shift", "OpenCV computes ln x")


def _swish(n: Node, g: Graph) -> tuple[str, str] | None:
    beta = float(n.attrs.get("beta", 1.0))
    return None if beta == 1.0 else (f"Swish beta={_num(beta)}", "OpenCV ignores beta")


def _multiply(n: Node, g: Graph) -> tuple[str, str] | None:
    return ("Scale with two bottoms and a bias", "OpenCV misapplies the bias") if "bias" in n.params else None


def _deconvolution(n: Node, g: Graph) -> tuple[str, str] | None:
    dil, pad = list(n.attrs.get("dilation", [1, 1])), list(n.attrs.get("pad", [0, 0]))
    if any(d != 1 for d in dil):
        return (f"Deconvolution dilation={dil}", "OpenCV ignores it")
    if len(set(pad)) > 1:
        return (f"Deconvolution pad_h/pad_w={pad}", "OpenCV ignores pad_h/pad_w")
    return None


def _normalize(n: Node, g: Graph) -> tuple[str, str] | None:
    if n.attrs.get("across_spatial") and not n.attrs.get("channel_shared"):
        return ("Normalize across_spatial with per-channel scale", "OpenCV refuses it")
    return None


def _priorbox(n: Node, g: Graph) -> tuple[str, str] | None:
    a = n.attrs
    if len(a.get("offsets") or ()) > 2:
        return (f"PriorBox {len(a['offsets'])} offset_h/offset_w pairs",
                "OpenCV sizes its output for 2 (n - 1) centres per size")
    if not a.get("clip"):
        return ("PriorBox clip=false", "OpenCV's default clip is true")
    if any(float(s) != int(float(s)) for s in [*a.get("min_sizes", []), *a.get("max_sizes", [])]):
        return ("PriorBox fractional min/max sizes", "OpenCV keeps the fraction, the fork truncates")
    return None


def _detection_output(n: Node, g: Graph) -> tuple[str, str] | None:
    return ("DetectionOutput", "OpenCV pads rows to keep_top_k, orders them by score and ignores eta")


def _proposal(n: Node, g: Graph) -> tuple[str, str] | None:
    return ("Proposal", "OpenCV has no minimum-size filter and pads the rois with zeros to post_nms_topn rows")


def _interp(n: Node, g: Graph) -> tuple[str, str] | None:
    return ("Interp pad_beg/pad_end", "OpenCV ignores them") if any(n.attrs.get("crop", [0, 0])) else None


RULES: dict[str, Callable[[Node, Graph], tuple[str, str] | None]] = {
    "LRN": _lrn, "MeanVarNorm": _mvn, "Log": _log, "Swish": _swish, "Multiply": _multiply,
    "Deconvolution": _deconvolution, "Normalize": _normalize, "PriorBox": _priorbox,
    "DetectionOutput": _detection_output, "Interp": _interp, "Proposal": _proposal,
}


def upstream(graph: Graph, value: str) -> list[Node]:
    """The nodes ``value`` depends on, in graph order."""
    needed, kept = {value}, []
    for node in reversed(graph.nodes):
        if any(v in needed for v in node.outputs):
            kept.append(node)
            needed |= set(node.inputs)
    return kept[::-1]


def known_deviations(graph: Graph, value: str) -> list[Deviation]:
    """Every layer ``value`` depends on that OpenCV is known to compute differently from Caffe."""
    found = []
    for node in upstream(graph, value):
        rule = RULES.get(node.op)
        found_here = rule(node, graph) if rule is not None else None
        if found_here:
            found.append(Deviation(node.name, node.op, *found_here))
    return found
