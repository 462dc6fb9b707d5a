"""What a validation found, as dataclasses, and their JSON form (schema ``caffe2x.validate/1``,
documented in ``docs/validate-report-schema.md``); :mod:`caffe2x.validation.report` renders it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffe2x.validation.comparison import TOPK, Comparison

#: the report's schema tag (see docs/validate-report-schema.md)
SCHEMA = "caffe2x.validate/1"

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
#: an oracle that ran through layers it is known to compute differently (``validate --oracle``)
NOT_JUDGED = "NOT_JUDGED"


@dataclass
class FrameworkResult:
    name: str
    status: str                                  # PASS | FAIL | SKIP
    reason: str | None = None
    artifact: str | None = None
    comparison: Comparison | None = None
    prepare_seconds: float | None = None
    run_seconds: float | None = None
    per_layer: list[float | None] | None = None  # max rel error per layer (None: not produced)
    first_divergent: str | None = None
    worst_layer: str | None = None
    #: a masked-pooling net that failed the comparison: the near-tie check (:mod:`caffe2x.validation.ties`)
    near_ties: dict[str, Any] | None = None
    logits: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TensorDifference:
    tensor: str        # graph tensor key (or the name in the file when it maps to none)
    stored_as: str     # name in the file
    max_abs: float
    max_rel: float


@dataclass
class ArtifactResult:
    path: str
    framework: str | None
    status: str
    tensors_checked: int = 0
    differing: list[TensorDifference] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    shape_mismatches: list[dict[str, Any]] = field(default_factory=list)
    comparison: Comparison | None = None
    messages: list[str] = field(default_factory=list)
    seconds: float | None = None
    #: the conversion recognised in the file: ``{"fold_bn": bool, "dtype": str, "logits_rtol": float}``
    conversion: dict[str, Any] | None = None


@dataclass
class Report:
    """Everything a validation found; :meth:`to_dict` is the JSON report (schema ``caffe2x.validate/1``)."""

    passed: bool
    model: str
    prototxt: str | None
    graph_name: str
    logits_blob: str
    logits_value: str
    logits_note: str
    input: dict[str, Any]
    rtol: float
    atol: float
    reference_topk: list[list[int]]
    reference_max_abs: float
    frameworks: list[FrameworkResult]
    pairwise: list[dict[str, Any]]
    layers: list[dict[str, Any]] | None
    artifacts: list[ArtifactResult]
    failures: list[str]
    labels: list[str] | None = field(default=None, repr=False)
    seconds: float = 0.0
    environment: dict[str, str | None] = field(default_factory=dict)
    #: ``--caffe-blobs``: each Caffe blob against the numpy reference (``{blob, shape, max_abs, max_rel, status}``)
    caffe_blobs: list[dict[str, Any]] | None = None
    #: ``--oracle``: each independent reference's logits against the reference (:mod:`caffe2x.validation.oracles`)
    oracles: list[dict[str, Any]] | None = None

    def framework(self, name: str) -> FrameworkResult:
        for f in self.frameworks:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return report_dict(self)

    def table(self) -> str:
        from caffe2x.validation.report import render_table

        return render_table(self.to_dict())

    def html(self) -> str:
        from caffe2x.validation.report import render_html

        return render_html(self.to_dict())


def num(x: float | None) -> float | None:
    """A float for JSON: None for None, NaN and infinities."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _names(labels: list[str] | None, topk: list[list[int]]) -> list[list[str]] | None:
    if labels is None:
        return None
    return [[labels[i] if 0 <= i < len(labels) else str(i) for i in row] for row in topk]


def _comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"max_abs": num(c.max_abs), "max_rel": num(c.max_rel), "top1_agree": c.top1_agree,
            "top5_agree": c.topk_agree, "within_tolerance": c.within, "top5": c.topk}


def report_dict(r: Report) -> dict[str, Any]:
    n = int(r.input["shape"][0])
    frameworks = []
    for f in r.frameworks:
        c = f.comparison
        frameworks.append({
            "name": f.name, "status": f.status, "reason": f.reason, "artifact": f.artifact,
            "max_abs": num(c.max_abs) if c else None, "max_rel": num(c.max_rel) if c else None,
            "top1_agree": c.top1_agree if c else None, "top5_agree": c.topk_agree if c else None,
            "samples": n, "within_tolerance": c.within if c else None,
            "top5": c.topk if c else None, "top5_labels": _names(r.labels, c.topk) if c else None,
            "prepare_seconds": num(f.prepare_seconds), "run_seconds": num(f.run_seconds),
            "per_layer_max_rel": None if f.per_layer is None else [num(v) for v in f.per_layer],
            "first_divergent_layer": f.first_divergent, "worst_layer": f.worst_layer,
            "near_ties": f.near_ties,
        })
    artifacts = [{
        "path": a.path, "framework": a.framework, "status": a.status, "tensors_checked": a.tensors_checked,
        "differing": [{"tensor": d.tensor, "stored_as": d.stored_as, "max_abs": num(d.max_abs),
                       "max_rel": num(d.max_rel)} for d in a.differing],
        "missing": list(a.missing), "extra": list(a.extra), "shape_mismatches": list(a.shape_mismatches),
        "logits": _comparison_dict(a.comparison), "messages": list(a.messages), "seconds": num(a.seconds),
        "conversion": a.conversion,
    } for a in r.artifacts]
    return {
        "schema": SCHEMA,
        "passed": r.passed,
        "model": r.model,
        "prototxt": r.prototxt,
        "graph": r.graph_name,
        "logits": {"blob": r.logits_blob, "value": r.logits_value, "note": r.logits_note},
        "input": r.input,
        "tolerance": {"rtol": r.rtol, "atol": r.atol, "topk": TOPK,
                      "rule": "max|a-b| <= atol + rtol*max|ref| and identical top-5 per image"},
        "reference": {"max_abs": num(r.reference_max_abs), "top5": r.reference_topk,
                      "top5_labels": _names(r.labels, r.reference_topk)},
        "frameworks": frameworks,
        "pairwise": r.pairwise,
        "layers": r.layers,
        "artifacts": artifacts,
        "caffe_blobs": r.caffe_blobs,
        "oracles": r.oracles,
        "failures": list(r.failures),
        "seconds": num(r.seconds),
        "environment": r.environment,
    }
