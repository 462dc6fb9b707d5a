"""``validate --against``: check files written earlier (or elsewhere) tensor by tensor, then run them.

The file's target is found by suffix (:func:`caffe2x.targets.reader_for`). Its tensors are compared
with those of the file caffe2x writes for the same graph and target, both read with that target's
:meth:`~caffe2x.targets.Target.stored_tensors` (so in the file's own naming and layout, keyed by graph
tensor key), then the file is loaded with the target's own loader and its logits compared with the
reference's.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import convert
from .comparison import comparison_problem, compare_logits, fmt_tol, within
from .errors import Caffe2xError
from .ir import Graph
from .results import FAIL, PASS, ArtifactResult, TensorDifference
from .targets import StoredTensor, reader_for, writer_of

PathLike = str | os.PathLike[str]


def artifact_stem(graph: Graph) -> str:
    """A file name stem from the graph's name."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in (graph.name or "model")).strip(".")
    return stem or "model"


def compare_tensors(stored: Mapping[str, StoredTensor], expected: Mapping[str, StoredTensor],
                    rtol: float, atol: float, result: ArtifactResult) -> None:
    """Names, shapes and values of a file's tensors against the expected ones (same target, same layout)."""
    result.missing = [k for k in expected if k not in stored]
    result.extra = [stored[k].name for k in stored if k not in expected]
    for key, want in expected.items():
        if key not in stored:
            continue
        got = stored[key]
        if tuple(got.array.shape) != tuple(want.array.shape):
            result.shape_mismatches.append({"tensor": key, "stored_as": got.name,
                                            "expected": list(want.array.shape), "found": list(got.array.shape)})
            continue
        result.tensors_checked += 1
        max_abs, max_rel, ok = within(got.array, want.array, rtol, atol)
        if not ok:
            result.differing.append(TensorDifference(key, got.name, max_abs, max_rel))


def check_artifact(path: PathLike, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, logits_value: str,
                   ref_topk: list[list[int]], rtol: float, atol: float,
                   written: dict[str, Path] | None = None, workdir: Path | None = None) -> ArtifactResult:
    """One ``--against`` artifact: every tensor against the file caffe2x writes from the graph (reused
    from ``written`` by target name when the validation wrote one, else written into ``workdir``),
    then its logits on the batch."""
    start = time.perf_counter()
    p = Path(path)
    target = reader_for(p)
    result = ArtifactResult(str(p), target.name, PASS)
    if not p.is_file():
        raise Caffe2xError(f"{p}: no such artifact file")
    if not target.available():
        result.status = FAIL
        result.messages.append(f"{p.name}: cannot check, {target.unavailable_reason()}")
        return result
    try:
        stored = target.stored_tensors(p, graph)
        reference_file = (written or {}).get(target.name)
        if reference_file is None:
            assert workdir is not None
            reference_file = Path(workdir) / f"expected-{artifact_stem(graph)}{target.default_suffix}"
            convert.write(graph, reference_file, writer_of(target).name, overwrite=True)  # checked up front by validate()
            if isinstance(written, dict):
                written[target.name] = reference_file  # the next artifact of this format reuses it
        expected = target.stored_tensors(reference_file, graph)
        compare_tensors(stored, expected, rtol, atol, result)
    except Caffe2xError as exc:
        result.status = FAIL
        result.messages.append(f"{p.name}: {exc}")
        result.seconds = time.perf_counter() - start
        return result
    for d in result.differing[:1]:
        via = f" (stored as {d.stored_as!r})" if d.stored_as != d.tensor else ""
        result.messages.append(f"{p.name}: tensor {d.tensor!r}{via} differs: max abs {d.max_abs:.1e}, max rel "
                               f"{d.max_rel:.1e} (rtol {fmt_tol(rtol)}, atol {fmt_tol(atol)})"
                               + (f"; {len(result.differing) - 1} more tensor(s) differ" if len(result.differing) > 1 else ""))
    if result.missing:
        result.messages.append(f"{p.name}: {len(result.missing)} tensor(s) missing, first {result.missing[0]!r}")
    if result.extra:
        result.messages.append(f"{p.name}: {len(result.extra)} unexpected tensor(s), first {result.extra[0]!r}")
    for m in result.shape_mismatches[:1]:
        result.messages.append(f"{p.name}: tensor {m['tensor']!r} has shape {m['found']}, expected {m['expected']}"
                               + (f"; {len(result.shape_mismatches) - 1} more" if len(result.shape_mismatches) > 1 else ""))
    # the artifact's own logits
    try:
        runner = target.load(p, graph)
        got = runner.run(x, [logits_value])[logits_value]
        result.comparison = compare_logits(got, ref_logits, ref_topk, rtol, atol)
        if not result.comparison.passed:
            result.messages.append(f"{p.name}: logits " + comparison_problem(result.comparison, rtol, atol))
    except Caffe2xError as exc:
        result.messages.append(f"{p.name}: cannot run its logits: {exc}")
    if result.messages:
        result.status = FAIL
    result.seconds = time.perf_counter() - start
    return result
