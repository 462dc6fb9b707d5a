"""Independent references for ``caffe2x validate --oracle NAME``: another implementation of Caffe that
computes the compared (logits) value from the same caffemodel, judged by the validator's pass rule
against the reference.

``opencv`` (:mod:`.opencv`) is OpenCV 4.x's Caffe importer. It reads a deploy prototxt written from the
net (:mod:`.deploy`), so it sees the same layers and weights but none of caffe2x's code. Layers it is
known to compute differently from Caffe (:mod:`.deviations`: LRN's ``k``, MVN's ``eps``, ...) make its
result *not judged*: their differences are reported with those layers named, not failed on. A net
OpenCV cannot run (a layer type it lacks) or a model that is no caffemodel skips the oracle, saying why.

The result is one JSON object per oracle in the report's ``oracles`` list
(``docs/validate-report-schema.md``).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError, option
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.validation.comparison import compare_logits, comparison_problem
from caffe2x.validation.oracles.deviations import known_deviations
from caffe2x.validation.results import FAIL, NOT_JUDGED, PASS, SKIP, num

#: oracle names ``--oracle`` takes
ORACLES = ("opencv",)

PathLike = str | os.PathLike[str]


def require(names: Sequence[str]) -> None:
    """Refuse, before any work, an unknown oracle or one whose library is not installed."""
    for name in names:
        if name not in ORACLES:
            raise Caffe2xError(f"unknown oracle {name!r}; choose from {', '.join(ORACLES)}")
        from caffe2x.validation.oracles import opencv

        why = opencv.unavailable_reason()
        if why is not None:
            raise Caffe2xError(f"{option('oracles', ['opencv'])}: {why}")


def _caffemodel(model: Any) -> Path | None:
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() not in (".safetensors", ".h5"):
        return Path(model)
    return None


def run_opencv(model: Any, prototxt: PathLike | None, graph: Graph, x: np.ndarray, value: str,
               ref_logits: np.ndarray, ref_topk: list[list[int]], rtol: float, atol: float,
               framework_logits: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """OpenCV's ``value`` for batch ``x`` against the reference's (and each framework's) logits."""
    from caffe2x.validation.oracles import opencv
    from caffe2x.validation.oracles.deploy import write_deploy

    deviations = known_deviations(graph, value)
    result: dict[str, Any] = {"name": "opencv", "version": opencv.version(), "status": SKIP, "reason": None,
                              "blob": graph.blob_name(value), "max_abs": None, "max_rel": None, "top1_agree": None,
                              "top5_agree": None, "samples": len(x), "within_tolerance": None,
                              "deviations": [d.to_dict() for d in deviations], "frameworks": []}
    caffemodel = _caffemodel(model)
    if caffemodel is None:
        result["reason"] = "OpenCV's importer reads a .caffemodel; this model is not one"
        return result
    producer = next(n for n in graph.nodes if value in n.outputs)
    (input_name,) = graph.inputs
    try:
        with tempfile.TemporaryDirectory(prefix="caffe2x-opencv-") as tmp:
            deploy = write_deploy(Path(tmp) / "deploy.prototxt", caffemodel, prototxt, graph, value, len(x),
                                  for_opencv=True)
            got = opencv.forward_isolated(deploy, caffemodel, input_name, x, producer.name,
                                          producer.outputs.index(value), Path(tmp))
        if got.size != ref_logits.size:
            raise Caffe2xError(f"OpenCV's {producer.name!r} has shape {list(got.shape)}, the reference's "
                               f"{list(ref_logits.shape)}")
        got = got.reshape(ref_logits.shape)
    except Caffe2xError as exc:
        result["reason"] = str(exc)
        return result
    c = compare_logits(got, ref_logits, ref_topk, rtol, atol)
    result.update(max_abs=num(c.max_abs), max_rel=num(c.max_rel), top1_agree=c.top1_agree, top5_agree=c.topk_agree,
                  within_tolerance=c.within)
    result["frameworks"] = [{"name": name, "max_rel": num(max_rel_error(logits, got))}
                            for name, logits in framework_logits.items() if logits.size == got.size]
    if deviations:
        shown = ", ".join(f"{d.layer} ({d.what})" for d in deviations[:3])
        more = f" and {len(deviations) - 3} more" if len(deviations) > 3 else ""
        result["status"] = NOT_JUDGED
        why = "; ".join(dict.fromkeys(d.why for d in deviations[:3]))
        result["reason"] = f"not judged: layers {shown}{more} implemented differently by OpenCV ({why})"
    elif c.passed:
        result["status"] = PASS
    else:
        result["status"] = FAIL
        result["reason"] = (f"OpenCV's {result['blob']!r} differs from the reference: "
                            f"{comparison_problem(c, rtol, atol)}")
    return result


def run_oracles(names: Sequence[str], model: Any, prototxt: PathLike | None, graph: Graph, x: np.ndarray,
                value: str, ref_logits: np.ndarray, ref_topk: list[list[int]], rtol: float, atol: float,
                framework_logits: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One result per requested oracle (:func:`require` has vetted the names)."""
    return [run_opencv(model, prototxt, graph, x, value, ref_logits, ref_topk, rtol, atol, framework_logits)
            for name in dict.fromkeys(names) if name == "opencv"]


__all__ = ["ORACLES", "NOT_JUDGED", "require", "run_oracles", "run_opencv"]
