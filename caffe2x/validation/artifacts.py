"""``validate --against``: check files written earlier (or elsewhere) tensor by tensor, then run them.

An artifact is judged by behaviour, not by being byte-identical to a default conversion. The file's
target is found by suffix (:func:`caffe2x.targets.reader_for`) and its tensors are read with that
target's :meth:`~caffe2x.targets.Target.stored_tensors` (the file's own naming and layout, keyed by
graph tensor key). Then the conversion that wrote it is recognised from the file itself:

* ``--fold-bn``: the file's tensor names match the folded graph's (no BatchNorm/Scale tensors), not the
  plain graph's; the expected tensors are those of the folded graph (:func:`caffe2x.graph.transforms.fold_bn`).
* ``--dtype``: at least 99 % of the stored values are exactly representable in bfloat16 (checked
  first, the narrower mantissa) or float16; the expected tensors are rounded to that dtype before the
  comparison (:func:`caffe2x.graph.numeric.round_to`), so a tampered value still shows, named.

* ``--profile NAME`` (another library's architecture and names): the
  profile is read from the file's metadata where the format has room for it (a profile
  ``.h5`` records the profile and the logit difference its conversion measured in root attributes,
  :meth:`Target.recorded_profile <caffe2x.targets.Target.recorded_profile>`); a ``.pt`` must stay a
  plain state_dict that loads into torchvision with ``strict=True``, so it records nothing and
  ``validate --profile torchvision`` must say what it is (a ``.pt`` whose names are the profile's,
  checked without it, fails with a one-line message saying so). The expected tensors are those of the
  profile conversion; the file is loaded into the profile's architecture
  (:meth:`Target.load_profile <caffe2x.targets.Target.load_profile>`) and the converter's measurement
  is re-run on it (its seeded input, ``max|a-b|/max|b|`` against the numpy reference). It passes when
  that difference is within the bound the converter printed (recorded, or for a ``.pt`` re-measured
  the same way on the file caffe2x writes for the model: the measurement is deterministic) plus the
  dtype's logits rtol. Its logits on the validation batch are reported, not judged: a different
  architecture may reorder classes. A ``--fold-bn --profile`` file (same names, other values) is
  recognised by comparing with the folded profile conversion when the plain one differs.

The expected tensors come from the file caffe2x writes for that graph variant with the same target (at
float32, then rounded in memory). The file is then loaded with the target's own loader into a model of
that graph variant, and its logits are compared with the (unrounded, unfolded) reference's.

Logits tolerance of a reduced-precision artifact
------------------------------------------------
A float32 artifact uses the run's ``rtol``/``atol`` and the full pass rule (identical top-5). A file
whose weights were rounded to a format with unit roundoff ``u`` (float16: ``u = 2**-11 ≈ 4.9e-4``;
bfloat16: ``u = 2**-8 ≈ 3.9e-3``) has every weight off by up to ``u`` relative; a dot product of such
weights is off by up to ``u`` relative to the sum of its terms' magnitudes, and layers add their
errors. The bound is ``rtol = max(run rtol, 16 u)`` (float16 7.8e-3, bfloat16 6.25e-2): 16 leaves room
for that accumulation over a deep net's depth and for cancellation (ResNet-50 in float16 measures
about 1e-3). Since a rounded net can legitimately reorder close classes, a reduced-precision
artifact must have the reference's top-1 on every image; its top-5 agreement is reported.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe2x import convert
from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import within
from caffe2x.graph.numeric import max_rel_error, round_to
from caffe2x.targets import ProfileRunner, RecordedProfile, StoredTensor, Target, reader_for, writer_of
from caffe2x.validation.comparison import comparison_problem, compare_logits, fmt_tol
from caffe2x.validation.results import FAIL, PASS, ArtifactResult, TensorDifference

PathLike = str | os.PathLike[str]

#: unit roundoff (half an ulp at 1.0) of each dtype caffe2x writes
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
#: a reduced-precision artifact's logits rtol, in units of its dtype's unit roundoff (see the docstring)
ROUNDOFF_FACTOR = 16
#: share of stored values that must be exactly representable in a dtype to call the file that dtype
DTYPE_SHARE = 0.99


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


def logits_rtol(dtype: str, rtol: float) -> float:
    """The logits rtol for an artifact stored in ``dtype`` (the run's own for float32)."""
    return rtol if dtype == "float32" else max(rtol, ROUNDOFF_FACTOR * UNIT_ROUNDOFF[dtype])


def stored_dtype(stored: Mapping[str, StoredTensor]) -> str:
    """The dtype a file's values were rounded to: bfloat16 or float16 when at least
    :data:`DTYPE_SHARE` of its values survive a round trip through it, else float32."""
    total = sum(int(t.array.size) for t in stored.values())
    if not total:
        return "float32"
    for dtype in ("bfloat16", "float16"):
        exact = 0
        for t in stored.values():
            a = np.asarray(t.array, dtype=np.float32)
            with np.errstate(over="ignore", invalid="ignore"):
                exact += int(np.count_nonzero(round_to(a, dtype) == a))
        if exact >= DTYPE_SHARE * total:
            return dtype
    return "float32"


@dataclass
class Expectation:
    """What one conversion should have stored: the graph variant and its tensors in the target's layout."""

    fold_bn: bool
    graph: Graph
    tensors: dict[str, StoredTensor]


def _expected_file(graph: Graph, target: Target, fold_bn: bool, written: dict[str, Path] | None,
                   workdir: Path | None, profile: str | None = None, suffix: str | None = None) -> Path:
    """The file caffe2x writes for ``graph`` (folded or not, or with a naming ``profile``, as
    ``suffix``) with ``target``'s writer, written once."""
    key = target.name + ("+fold-bn" if fold_bn else "") + (f"+profile:{profile}" if profile else "")
    path = (written or {}).get(key)
    if path is None:
        assert workdir is not None
        variant = ".folded" if fold_bn else f".{profile}" if profile else ""
        path = Path(workdir) / f"expected-{artifact_stem(graph)}{variant}{suffix or target.default_suffix}"
        convert.write(graph, path, writer_of(target).name, fold_bn=fold_bn, profile=profile, overwrite=True)
        if isinstance(written, dict):
            written[key] = path  # the next artifact of this format reuses it
    return path


def expectation(stored: Mapping[str, StoredTensor], graph: Graph, target: Target,
                written: dict[str, Path] | None, workdir: Path | None) -> Expectation:
    """The conversion (plain or ``--fold-bn``) whose tensor names the file's match best."""
    from caffe2x.graph.transforms import fold_bn

    def mismatch(expected: Mapping[str, StoredTensor]) -> int:
        return sum(k not in stored for k in expected) + sum(k not in expected for k in stored)

    plain = Expectation(False, graph, target.stored_tensors(_expected_file(graph, target, False, written, workdir), graph))
    if not mismatch(plain.tensors):
        return plain
    folded_graph = fold_bn(graph)
    if len(folded_graph.tensors) == len(graph.tensors):
        return plain  # nothing to fold: the plain names are the only candidate
    path = _expected_file(graph, target, True, written, workdir)
    folded = Expectation(True, folded_graph, target.stored_tensors(path, folded_graph))
    return folded if mismatch(folded.tensors) < mismatch(plain.tensors) else plain


def _read_stored(target: Target, path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """The file's tensors; a format read through a model of the graph that does not load
    into the plain graph's model is read into the folded graph's (a ``--fold-bn`` file)."""
    try:
        return target.stored_tensors(path, graph)
    except Caffe2xError:
        from caffe2x.graph.transforms import fold_bn

        folded = fold_bn(graph)
        if len(folded.tensors) == len(graph.tensors):
            raise
        try:
            return target.stored_tensors(path, folded)
        except Caffe2xError:
            pass
        raise


def _profile_of(target: Target, p: Path, profiles: Sequence[str]) -> tuple[str, RecordedProfile | None] | None:
    """The naming profile ``p`` is checked as: the one its metadata records (with its bound), else one
    of ``profiles`` (``validate --profile``) that ``target`` writes with ``p``'s suffix."""
    recorded = target.recorded_profile(p)
    if recorded is not None:
        if recorded.profile not in target.profiles:
            raise Caffe2xError(f"records naming profile {recorded.profile!r}, which the {target.name} target "
                               f"does not know")
        return recorded.profile, recorded
    for name in profiles:
        if p.suffix.lower() in target.profiles.get(name, ()):
            return name, None
    return None


def _unflagged_profile(stored: Mapping[str, StoredTensor], graph: Graph, target: Target, p: Path,
                       written: dict[str, Path] | None, workdir: Path | None) -> str | None:
    """The naming profile whose tensor names a file matches when it matches no plain or folded
    conversion (a profile file of a format that records no bound, checked without ``--profile``)."""
    for name, suffixes in target.profiles.items():
        if p.suffix.lower() not in suffixes:
            continue
        try:
            path = _expected_file(graph, target, False, written, workdir, profile=name, suffix=p.suffix.lower())
        except Caffe2xError:
            continue  # the profile does not apply to this net
        if set(target.stored_tensors(path, graph)) == set(stored):
            return name
    return None


def _profile_difference(runner: ProfileRunner, value: str, reference: np.ndarray) -> float:
    """``max|a-b|/max|b|`` of a profile net's logits on its measurement input, as the converter measured it."""
    return max_rel_error(runner.run(runner.measurement_input, [value])[value], reference)


def _check_profile(p: Path, target: Target, stored: Mapping[str, StoredTensor], profile: str,
                   recorded: RecordedProfile | None, graph: Graph, x: np.ndarray, ref_logits: np.ndarray,
                   value: str, ref_topk: list[list[int]], rtol: float, atol: float,
                   written: dict[str, Path] | None, workdir: Path | None, result: ArtifactResult) -> None:
    """A naming-profile artifact (see the module docstring): tensors against the profile conversion's,
    then the profile net's logit difference on the converter's seeded input against the bound."""
    from caffe2x.graph.reference import execute

    dtype = stored_dtype(stored)

    def compared_with(fold_bn: bool) -> tuple[Path, ArtifactResult]:
        path = _expected_file(graph, target, fold_bn, written, workdir, profile=profile, suffix=p.suffix.lower())
        expected = {k: StoredTensor(t.name, round_to(t.array, dtype))
                    for k, t in target.stored_tensors(path, graph).items()}
        trial = ArtifactResult(result.path, result.framework, PASS)
        compare_tensors(stored, expected, rtol, atol, trial)
        return path, trial

    fold_bn = False
    expected_path, trial = compared_with(False)
    if trial.differing:  # a --fold-bn --profile file stores other values under the same names
        try:
            folded = compared_with(True)
        except Caffe2xError:
            folded = None  # this profile takes no folded net
        if folded is not None and len(folded[1].differing) < len(trial.differing):
            (expected_path, trial), fold_bn = folded, True
    for name in ("tensors_checked", "differing", "missing", "extra", "shape_mismatches"):
        setattr(result, name, getattr(trial, name))
    runner = target.load_profile(p, graph, profile)
    reference = execute(graph, runner.measurement_input, keep={value})[value]
    if recorded is not None:
        bound, source = recorded.max_rel, "recorded in the file"
    else:  # the converter's measurement is deterministic: re-run it on the file caffe2x writes for this model
        bound, source = _profile_difference(target.load_profile(expected_path, graph, profile), value, reference), \
            "re-measured from the model (--profile)"
    measured = _profile_difference(runner, value, reference)
    limit = bound + logits_rtol(dtype, rtol)
    result.comparison = compare_logits(runner.run(x, [value])[value], ref_logits, ref_topk, limit, atol)
    result.conversion = {"fold_bn": fold_bn, "dtype": dtype, "logits_rtol": limit, "profile": profile,
                         "profile_bound": bound, "profile_bound_source": source, "profile_max_rel": measured}
    if not measured <= limit:
        result.messages.append(f"{p.name}: {profile} profile logits differ from the reference by {measured:.3g} "
                               f"max rel on the converter's seeded input, above the bound {bound:.3g} "
                               f"{source} (+ {fmt_tol(limit - bound)})")


def _tensor_messages(p: Path, result: ArtifactResult, rtol: float, atol: float) -> None:
    """One line each for the first differing tensor, the missing, unexpected and misshapen ones; the
    tensor-check lines go before any logits line."""
    lines = []
    for d in result.differing[:1]:
        via = f" (stored as {d.stored_as!r})" if d.stored_as != d.tensor else ""
        lines.append(f"{p.name}: tensor {d.tensor!r}{via} differs: max abs {d.max_abs:.1e}, max rel "
                     f"{d.max_rel:.1e} (rtol {fmt_tol(rtol)}, atol {fmt_tol(atol)})"
                     + (f"; {len(result.differing) - 1} more tensor(s) differ" if len(result.differing) > 1 else ""))
    if result.missing:
        lines.append(f"{p.name}: {len(result.missing)} tensor(s) missing, first {result.missing[0]!r}")
    if result.extra:
        lines.append(f"{p.name}: {len(result.extra)} unexpected tensor(s), first {result.extra[0]!r}")
    for m in result.shape_mismatches[:1]:
        lines.append(f"{p.name}: tensor {m['tensor']!r} has shape {m['found']}, expected {m['expected']}"
                     + (f"; {len(result.shape_mismatches) - 1} more" if len(result.shape_mismatches) > 1 else ""))
    result.messages[:0] = lines


@dataclass
class ArtifactJob:
    """One ``--against`` check as a job :mod:`caffe2x.validation.isolated` can run in a child process of its own
    (picklable), so checking artifacts of several frameworks does not leave each framework (and its
    model) in the validating process."""

    path: Path
    value: str
    ref_topk: list[list[int]]
    rtol: float
    atol: float
    written: dict[str, Path]
    workdir: Path | None
    profiles: tuple[str, ...] = ()

    def execute(self, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, say: object = None,
                tick: object = None) -> ArtifactResult:
        return check_artifact(self.path, graph, x, ref_logits, self.value, self.ref_topk, self.rtol, self.atol,
                              self.written, self.workdir, profiles=self.profiles)

    def failed(self, reason: str) -> ArtifactResult:
        """The result of a check that could not report (its child process died)."""
        return ArtifactResult(str(self.path), reader_for(self.path).name, FAIL,
                              messages=[f"{self.path.name}: the check {reason}"])


def check_artifact(path: PathLike, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, logits_value: str,
                   ref_topk: list[list[int]], rtol: float, atol: float,
                   written: dict[str, Path] | None = None, workdir: Path | None = None,
                   profiles: Sequence[str] = ()) -> ArtifactResult:
    """One ``--against`` artifact: every tensor against what its conversion (plain or ``--fold-bn``,
    at its dtype) should have stored, then its logits on the batch (see the module docstring).
    Expected files are reused from ``written`` (keyed by target name, ``+fold-bn`` for folded ones)
    when the validation wrote one, else written into ``workdir``. ``profiles``: naming profiles
    (``validate --profile``) that files recording none were written with."""
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
        stored = _read_stored(target, p, graph)
        profile = _profile_of(target, p, profiles)
        if profile is not None:
            _check_profile(p, target, stored, *profile, graph, x, ref_logits, logits_value, ref_topk, rtol, atol,
                           written, workdir, result)
            _tensor_messages(p, result, rtol, atol)
            result.status = FAIL if result.messages else PASS
            result.seconds = time.perf_counter() - start
            return result
        expect = expectation(stored, graph, target, written, workdir)
        if target.profiles and set(stored) != set(expect.tensors):
            name = _unflagged_profile(stored, graph, target, p, written, workdir)
            if name is not None:
                cannot = getattr(target.implementation(), "recorded_profile", None) is None
                why = (f", and a {p.suffix} file cannot record the logit bound that conversion printed" if cannot
                       else " but records no logit bound for it (written before caffe2x recorded one?)")
                raise Caffe2xError(f"holds the tensors of a --profile {name} conversion{why}: pass --profile {name} "
                                   f"to check it against that bound")
        dtype = stored_dtype(stored)
        expected = {k: StoredTensor(t.name, round_to(t.array, dtype)) for k, t in expect.tensors.items()}
        if expect.fold_bn:  # the folded graph's tensors are read back with the folded graph's names
            stored = target.stored_tensors(p, expect.graph)
        compare_tensors(stored, expected, rtol, atol, result)
    except Caffe2xError as exc:
        result.status = FAIL
        text = str(exc)  # the bounded readers' errors name the file already
        result.messages.append(text if text.startswith(f"{p.name}: ") else f"{p.name}: {text}")
        result.seconds = time.perf_counter() - start
        return result
    run_rtol = logits_rtol(dtype, rtol)
    result.conversion = {"fold_bn": expect.fold_bn, "dtype": dtype, "logits_rtol": run_rtol}
    _tensor_messages(p, result, rtol, atol)
    # the artifact's own logits
    try:
        runner = target.load(p, expect.graph)
        got = runner.run(x, [logits_value])[logits_value]
        c = compare_logits(got, ref_logits, ref_topk, run_rtol, atol)
        result.comparison = c
        n = len(c.topk)
        ok = c.passed if dtype == "float32" else (c.within and c.top1_agree == n)
        if not ok:
            problem = comparison_problem(c, run_rtol, atol)
            if dtype != "float32" and c.within:
                problem = f"top-1 differs on {n - c.top1_agree}/{n} image(s) ({dtype} file)"
            result.messages.append(f"{p.name}: logits " + problem)
    except Caffe2xError as exc:
        result.messages.append(f"{p.name}: cannot run its logits: {exc}")
    if result.messages:
        result.status = FAIL
    result.seconds = time.perf_counter() - start
    return result
