"""``caffe2x validate``: convert, reload every file with its framework's own loader, run, compare.

What a validation does
----------------------
1. Read the model into a graph and pick the **logits**: the input of the final Softmax when the net
   ends in one (``fc1000`` for ResNet), else the net's (first) output blob.
2. Build the input batch (:mod:`caffe2x.validation.preprocess`: the packaged photos, Caffe's ImageNet
   preprocessing; seeded Gaussian noise for nets that do not take 3-channel images).
3. Run the numpy reference executor (:mod:`caffe2x.graph.reference`, Caffe's exact semantics) on it.
4. For every registered target that runs its files (:func:`caffe2x.targets.names` with ``runs=True``;
   ``numpy`` is the reference itself run from the ``.safetensors`` file): write its file into a work
   directory, load it back with :meth:`Target.load <caffe2x.targets.Target.load>` (the framework's
   **own** loader, into a model whose weights were zeroed first, so every number comes from the
   file), run the batch, compare the logits with the reference (:mod:`caffe2x.validation.comparison`). Photos
   run one at a time and ``per_layer`` compares every layer as each photo's values come out, against
   the reference's values spilled to disk (:mod:`caffe2x.validation.framework_run`), so memory holds one photo's
   values of one framework; a big model runs each framework in a child process of its own
   (:mod:`caffe2x.validation.isolated`), so a framework's memory is gone before the next one starts.
5. Optionally (``against``) check existing artifacts tensor by tensor and run their logits
   (:mod:`caffe2x.validation.artifacts`).

The pass rule is :mod:`caffe2x.validation.comparison`'s: ``max|logits - ref| <= atol + rtol * max|ref|`` and
identical top-5 classes on every image. 1e-4 is well above float32 reordering noise through ResNet-50
(about 1e-6) and far below what one wrong BatchNorm does (~1e-1). The run passes when every framework
and every artifact passes; a framework that is not installed is skipped, unless it was named
explicitly, which fails the run.

This module knows no framework: it iterates over :mod:`caffe2x.targets`, so a target added by another
package (entry-point group ``caffe2x.targets``) is validated like the built-in ones. Results are the
dataclasses of :mod:`caffe2x.validation.results`; :mod:`caffe2x.validation.report` renders them.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2x._version import __version__
from caffe2x.errors import Caffe2xError, option
from caffe2x.graph.ir import Graph
from caffe2x.targets import Target, all_targets, get, names, reader_for, writer_of
from caffe2x.validation.artifacts import ArtifactJob, artifact_stem, check_artifact, compare_tensors
from caffe2x.validation.comparison import (DEFAULT_ATOL, DEFAULT_RTOL, TOPK, Comparison, compare_logits,
                                           comparison_problem, logits_blob, topk, within)
from caffe2x.validation.framework_run import (FrameworkJob, FrameworkOutcome, batches_for, layer_curve,
                                              release_memory, spill_reference)
from caffe2x.validation.results import (FAIL, PASS, SCHEMA, SKIP, ArtifactResult, FrameworkResult, Report,
                                        TensorDifference, num)

if TYPE_CHECKING:  # the children's module is imported only when a framework runs in one
    from caffe2x.validation.isolated import Started

PathLike = str | os.PathLike[str]


def read_labels(path: PathLike) -> list[str]:
    """Class names from a ``synset_words.txt``-style file: one class per line, an optional WordNet id
    first (``n01440764 tench, Tinca tinca`` -> ``tench``)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise Caffe2xError(f"{path}: cannot read labels: {exc.strerror or exc}") from None
    names_ = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        if rest and len(head) > 1 and head[0] == "n" and head[1:].isdigit():
            line = rest.strip()
        names_.append(line.split(",")[0].strip())
    if not names_:
        raise Caffe2xError(f"{path}: no labels in the file")
    return names_


def _environment(targets: Sequence[Target]) -> dict[str, str | None]:
    """Versions of Python, numpy, caffe2x and every installed distribution the targets import."""
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, str | None] = {"caffe2x": __version__, "python": platform.python_version(),
                                  "platform": platform.platform(), "numpy": np.__version__}
    wanted = [d for t in targets for d in (t.requires if t.distributions is None else t.distributions)]
    wanted.append("pillow")
    for dist in dict.fromkeys(wanted):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return env


def _layer_values(graph: Graph) -> list[str]:
    return [v for node in graph.nodes for v in node.outputs]


def validate(model: PathLike | Graph, prototxt: PathLike | None = None, frameworks: Sequence[str] | None = None,
             images: PathLike | Sequence[PathLike] | None = None, mean: PathLike | np.ndarray | None = None,
             mean_values: Sequence[float] | None = None, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
             per_layer: bool = False, against: Sequence[PathLike] | None = None,
             input_shape: Sequence[int] | None = None, labels: PathLike | Sequence[str] | None = None,
             outputs: str | Sequence[str] | None = None,
             keep_artifacts: PathLike | None = None, progress: Callable[[str], None] | None = None,
             proto: PathLike | None = None, overwrite: bool = False,
             caffe_blobs: PathLike | None = None, inputs: PathLike | None = None,
             progress_bar: bool = False, profiles: Sequence[str] | None = None,
             oracles: Sequence[str] | None = None, isolate: bool | None = None) -> Report:
    """Convert ``model`` to every framework, reload each file with its own loader, run the same batch
    and compare the logits with the numpy reference (see the module docstring for the pass rule).

    ``model`` is a ``.caffemodel`` / caffe2x ``.safetensors`` path (read with :func:`caffe2x.load`) or a
    :class:`~caffe2x.graph.ir.Graph`. ``frameworks``: names of registered targets that run their files
    (default: every available one; an explicitly named one that is not installed fails the run).
    ``against``: existing artifacts to check tensor by tensor. ``outputs``: blob names to cut the net to
    (as :func:`caffe2x.load`'s). ``keep_artifacts``: a directory to write the converted files to
    (default: a temporary directory, removed afterwards); files already there are kept (the run fails
    before any work) unless ``overwrite``. ``progress``: called with one-line progress messages.
    ``proto``: a Caffe fork's own ``caffe.proto`` (as :func:`caffe2x.load`'s). ``caffe_blobs``: an
    ``.npz``/``.h5`` of blobs real Caffe computed (:mod:`caffe2x.caffe.blobs`): the numpy reference is
    checked against every one, and the frameworks against Caffe's logits when the file has them.
    ``inputs``: the batch as ``.npy``/``.npz`` (default with ``caffe_blobs``: its input blob), or images.
    ``progress_bar``: a tqdm bar on stderr over the frameworks and artifacts (the CLI turns it on for a
    terminal only; ``progress`` lines are then written above it). ``profiles``: naming profiles
    (``torchvision``) the ``against`` files of formats that cannot record one were written with
    (:mod:`caffe2x.validation.artifacts`). ``oracles``: independent references for the logits (``["opencv"]``:
    OpenCV's Caffe importer, :mod:`caffe2x.validation.oracles`); an unknown or uninstalled one is an error up front.
    ``isolate``: run each framework in a child process of its own (True), in this process (False), or
    (None) in a child when the model's tensors reach :data:`ISOLATE_BYTES`; see :mod:`caffe2x.validation.isolated`.
    """
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    for tol_name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise Caffe2xError(f"{tol_name} must be a finite number >= 0, got {tol!r}")
    if isinstance(model, Graph):
        graph, model_name, stem = model, model.name or "graph", artifact_stem(model)
    else:
        from caffe2x.loading import read_model

        say(f"reading {model}" + (f" with {prototxt}" if prototxt else ""))
        if isinstance(outputs, str):
            outputs = [o for o in outputs.split(",") if o]
        graph = read_model(model, prototxt, input_shape, outputs=outputs, proto=proto)
        model_name, stem = str(model), Path(model).stem
    oracles = [oracles] if isinstance(oracles, str) else list(oracles or ())
    if oracles:
        from caffe2x.validation.oracles import require

        require(oracles)
    if len(graph.inputs) != 1:
        raise Caffe2xError(f"validate runs single-input nets; this one has {len(graph.inputs)} "
                           f"({', '.join(graph.inputs)})")
    runnable = names(runs=True)
    explicit = frameworks is not None
    chosen = list(dict.fromkeys(frameworks)) if frameworks is not None else runnable
    unknown = [n for n in chosen if n not in runnable]
    if unknown:
        raise Caffe2xError(f"unknown framework {unknown[0]!r}; choose from {', '.join(runnable)}")
    targets = [get(n) for n in chosen]
    known_profiles = list(dict.fromkeys(p for t in all_targets() for p in t.profiles))
    profiles = [profiles] if isinstance(profiles, str) else list(profiles or ())
    for prof in profiles:
        if prof not in known_profiles:
            raise Caffe2xError(f"unknown naming profile {prof!r}; known: {', '.join(known_profiles)}")
    for art in against or ():
        reader_for(art)
        if not Path(art).is_file():
            raise Caffe2xError(f"{art}: no such artifact file")
        if keep_artifacts is not None and Path(art).resolve().parent == Path(keep_artifacts).resolve() \
                and Path(art).stem == stem:
            raise Caffe2xError(f"{art} would be overwritten by the files written to {keep_artifacts}; "
                               f"keep the artifacts elsewhere")
    if keep_artifacts is not None:
        _refuse_existing_artifacts(Path(keep_artifacts), stem, targets, bool(against), overwrite)
        from caffe2x.fileio import refuse_collisions

        refuse_collisions([("kept artifact", Path(keep_artifacts) / f"{prefix}{stem}{t.default_suffix}")
                           for t in targets for prefix in ("", "expected-")],
                          run_inputs(model, prototxt, mean, images, against, labels))
    label_names = (read_labels(labels) if isinstance(labels, (str, os.PathLike)) else
                   [str(s) for s in labels] if labels is not None else None)

    blob, value, note = logits_blob(graph)
    (input_name, input_shape_), = graph.inputs.items()
    from caffe2x.validation.preprocess import Inputs, make_inputs

    from caffe2x.caffe.blobs import check_input, read_arrays, read_inputs

    blobs = read_arrays(caffe_blobs, option("caffe_blobs")) if caffe_blobs is not None else None
    array_inputs = inputs is not None and Path(inputs).suffix.lower() in (".npy", ".npz")
    if inputs is not None and not array_inputs:
        images = inputs
    if array_inputs:
        assert inputs is not None
        batch = Inputs(read_inputs(inputs, input_name, tuple(input_shape_)), "array", [str(inputs)])
    elif blobs is not None and input_name in blobs:
        batch = Inputs(check_input(blobs[input_name], tuple(input_shape_), str(caffe_blobs)), "array",
                       [f"{caffe_blobs}:{input_name}"])
    else:
        batch = make_inputs(input_name, input_shape_, images, mean, mean_values)
    inputs = batch
    x = inputs.array
    say(f"  {len(graph.nodes)} layers; logits {blob!r} ({note}); input {list(x.shape)} "
        f"({'photos' if inputs.kind == 'images' else 'seeded Gaussian'})")
    if inputs.note:
        say(f"  note: {inputs.note}")

    # ------------------------------------------------------------------ reference
    from caffe2x.graph.reference import execute

    say("running the numpy reference" + (" (every layer kept, on disk)" if per_layer else ""))
    t = time.perf_counter()
    layer_values = _layer_values(graph) if per_layer else []
    batches = batches_for(len(x), inputs.kind == "images", graph)
    blob_checks = None
    blob_values_: dict[str, str] = {}
    if blobs is not None:
        from caffe2x.caffe.blobs import blob_values

        blob_values_ = blob_values(graph, blobs, str(caffe_blobs))
    keep = {value} | set(blob_values_.values())
    # the reference's layer values (per-layer runs) and the child processes' files
    run_dir = Path(tempfile.mkdtemp(prefix="caffe2x-validate-run-"))
    runs = _Runs(graph, run_dir, isolate)
    try:
        runs.start_early(targets)  # the first children import their frameworks while the reference runs
        if per_layer:
            ref_values, spill = spill_reference(graph, x, batches, layer_values, keep, run_dir)
        else:
            ref_values, spill = execute(graph, x, keep=keep), None
        ref_logits = ref_values[value]
        if blobs is not None:
            from caffe2x.caffe.blobs import compare_blobs

            blob_checks = compare_blobs(blobs, blob_values_, ref_values, rtol, atol)
            if blob_values_.get(blob) == value and blobs[blob].size == ref_logits.size:
                ref_logits = blobs[blob].reshape(ref_logits.shape)  # every framework against Caffe's own logits
                say(f"  the frameworks are compared with Caffe's {blob!r} from {caffe_blobs}")
        if label_names is not None and len(label_names) != int(np.prod(ref_logits.shape[1:])):
            raise Caffe2xError(f"the labels name {len(label_names)} classes, the logits {blob!r} have "
                               f"{int(np.prod(ref_logits.shape[1:]))}")
        ref_topk = topk(ref_logits)
        say(f"  done in {time.perf_counter() - t:.1f}s")
        del ref_values

        failures: list[str] = []
        for check in blob_checks or ():
            if not check.passed:
                failures.append(f"Caffe blob {check.blob!r} ({caffe_blobs}) differs from the numpy reference: "
                                f"max rel {check.max_rel:.1e}, max abs {check.max_abs:.1e} (rtol {rtol:g}, atol {atol:g})")
        results: list[FrameworkResult] = []
        written: dict[str, Path] = {}
        from caffe2x.validation.ties import tie_request

        ties = tie_request(graph, ref_topk, rtol, atol)  # None unless the net unpools by a MAX pooling's mask
        with _workdir(keep_artifacts) as workdir:
            files = _ArtifactFiles(workdir, stem)
            runs.inputs(x, ref_logits)
            bar = _bar(len(targets) * len(batches) + len(against or ()), progress_bar)
            by_name: dict[str, FrameworkResult] = {}
            for group in runs.groups(targets):
                bar.set_postfix_str(", ".join(t.name for t in group))
                jobs = [FrameworkJob(t.name, *files.plan(t), value, layer_values, batches, spill, ties) for t in group]
                for target, result in zip(group, _side_by_side([
                        (lambda t=t, j=j: _run_framework(t, j, graph, files, runs, ref_logits, ref_topk, rtol, atol,
                                                         explicit, say, written, bar))
                        for t, j in zip(group, jobs)])):
                    by_name[target.name] = result
            for target in targets:  # the report lists the frameworks in the order asked, whatever ran first
                results.append(by_name[target.name])
                if by_name[target.name].status == FAIL:
                    failures.append(f"{target.name}: {by_name[target.name].reason}")
            artifacts = []
            scratch = Path(tempfile.mkdtemp(prefix="caffe2x-expected-")) if against else None
            try:
                for art in against or ():
                    say(f"checking artifact {art}")
                    bar.set_postfix_str(Path(art).name)
                    job = ArtifactJob(Path(art), value, ref_topk, rtol, atol, written, scratch, tuple(profiles or ()))
                    a = runs.run(reader_for(art), job, say, lambda _i: None)
                    artifacts.append(a)
                    bar.update()
                    say(f"  {a.status}" + (f": {a.messages[0]}" if a.messages else f" ({a.tensors_checked} tensors)"))
                    failures.extend(a.messages)
            finally:  # an interrupt or a crash inside a framework must not leave the expected files in /tmp
                if scratch is not None:
                    shutil.rmtree(scratch, ignore_errors=True)
            bar.close()
    finally:
        runs.close()
        shutil.rmtree(run_dir, ignore_errors=True)

    oracle_results = None
    if oracles:
        from caffe2x.validation.oracles import run_oracles

        say(f"running the independent reference(s): {', '.join(oracles)}")
        oracle_results = run_oracles(oracles, model, prototxt, graph, x, value, ref_logits, ref_topk, rtol, atol,
                                     {r.name: r.logits for r in results if r.logits is not None})
        failures.extend(f"{o['name']} oracle: {o['reason']}" for o in oracle_results if o["status"] == FAIL)
    pairwise = []
    ran = [r for r in results if r.logits is not None]
    scale = float(np.max(np.abs(ref_logits))) if ref_logits.size else 0.0
    for i, a in enumerate(ran):
        for b in ran[i + 1:]:
            d = float(np.max(np.abs(a.logits.astype(np.float64) - b.logits))) if a.logits.shape == b.logits.shape else float("nan")
            pairwise.append({"a": a.name, "b": b.name, "max_abs": num(d),
                             "max_rel": num(d / scale if scale > 0 else d)})
    layers = None
    if per_layer:
        layers = [{"index": i, "name": node.name, "op": node.op, "values": list(node.outputs)}
                  for i, node in enumerate(graph.nodes)]
    ran_any = (any(r.status != SKIP for r in results) or bool(against)
               or any(o["status"] != SKIP for o in oracle_results or ()))
    if not ran_any:
        failures.append("no framework ran (none available)")
    return Report(
        passed=not failures, model=model_name, prototxt=str(prototxt) if prototxt else None,
        graph_name=graph.name, logits_blob=blob, logits_value=value, logits_note=note, input=inputs.describe(),
        rtol=float(rtol), atol=float(atol), reference_topk=ref_topk,
        reference_max_abs=float(np.max(np.abs(ref_logits))) if ref_logits.size else 0.0,
        frameworks=results, pairwise=pairwise, layers=layers, artifacts=artifacts, failures=failures,
        labels=label_names, seconds=time.perf_counter() - started, environment=_environment(all_targets()),
        caffe_blobs=None if blob_checks is None else [c.to_dict() for c in blob_checks], oracles=oracle_results)


class _NoBar:
    """The bar's interface when there is none (piped output, ``-q``, library calls)."""

    def set_postfix_str(self, _s: str) -> None:
        pass

    def update(self, _n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, shown: bool) -> Any:
    """A tqdm bar on stderr over the frameworks and artifacts, or a silent stand-in."""
    if not shown:
        return _NoBar()
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="validate", unit="step", file=sys.stderr, leave=False)


@contextlib.contextmanager
def _workdir(keep: PathLike | None) -> Iterator[Path]:
    if keep is not None:
        path = Path(keep)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Caffe2xError(f"cannot create {path}: {exc.strerror or exc}") from None
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="caffe2x-validate-") as tmp:
        yield Path(tmp)


class _ArtifactFiles:
    """The files a validation writes: one per writing target (a target that writes no files of its own
    runs the file its suffix's writer wrote, written once), named ``<stem><suffix>``."""

    def __init__(self, workdir: Path, stem: str) -> None:
        self.workdir = workdir
        self.stem = stem
        self.by_writer: dict[str, Path] = {}

    def plan(self, target: Target) -> tuple[Path, str | None]:
        """(the file ``target`` runs, the target that must write it first or None when it is written)."""
        writer = writer_of(target)
        if writer.name in self.by_writer:
            return self.by_writer[writer.name], None
        path = self.workdir / f"{self.stem}{target.default_suffix}"
        if path in self.by_writer.values():  # two writers of one suffix: keep both files
            path = self.workdir / f"{self.stem}.{writer.name}{target.default_suffix}"
        # validate() refused existing files in a kept-artifacts directory up front (unless overwrite)
        return path, writer.name

    def done(self, target: Target, path: Path) -> None:
        """``path`` was written for ``target`` (by this process or a child)."""
        self.by_writer.setdefault(writer_of(target).name, path)


def _run_framework(target: Target, job: FrameworkJob, graph: Graph, files: _ArtifactFiles, runs: _Runs,
                   ref_logits: np.ndarray, ref_topk: list[list[int]], rtol: float, atol: float, explicit: bool,
                   say: Callable[[str], None], written: dict[str, Path], bar: Any) -> FrameworkResult:
    name = target.name
    n = len(job.batches)
    if not target.available():
        bar.update(n)
        why = target.unavailable_reason()
        if explicit:
            say(f"{name}: FAIL, {why}")
            return FrameworkResult(name, FAIL, f"requested but {why}")
        say(f"{name}: skipped, {why}")
        return FrameworkResult(name, SKIP, why)
    ticks = []

    def tick(i: int) -> None:
        ticks.append(i)
        bar.set_postfix_str(f"{name} {i + 1}/{n}" if n > 1 else name)
        bar.update()

    outcome = runs.run(target, job, say, tick)
    bar.update(n - len(ticks))
    if outcome.written:
        files.done(target, job.artifact)
    result = FrameworkResult(name, PASS, prepare_seconds=outcome.prepare_seconds, run_seconds=outcome.run_seconds)
    if outcome.loaded:
        result.artifact = job.artifact.name
        written.setdefault(name, job.artifact)
    if outcome.reason is None and outcome.logits is not None:
        try:
            result.logits = outcome.logits
            result.comparison = compare_logits(result.logits, ref_logits, ref_topk, rtol, atol)
        except Caffe2xError as exc:
            outcome.reason = f"running failed: {exc}"
        else:
            if job.layer_values:
                result.per_layer, result.first_divergent, result.worst_layer = layer_curve(
                    graph, outcome.stats, rtol, atol)
    if outcome.reason is not None:
        result.status, result.reason = FAIL, outcome.reason
    if result.comparison is not None and not result.comparison.passed:
        result.status = FAIL
        result.reason = comparison_problem(result.comparison, rtol, atol)
        if result.first_divergent:
            result.reason += f"; first layer past tolerance: {result.first_divergent}"
        if outcome.reason is None and outcome.tie_runs:
            _judge_ties(result, outcome.tie_runs, graph, runs.x, job.value, rtol, atol, say)
    c = result.comparison
    say(f"{name}: {result.status}" + (f", max rel {c.max_rel:.1e}, top-5 {c.topk_agree}/{len(c.topk)}" if c else "")
        + (f" ({result.near_ties['note']})" if result.near_ties and result.status == PASS else "")
        + (f" ({result.reason})" if result.reason and result.status == FAIL else "")
        + (f" [own process, peak RSS {outcome.peak_rss_mb:.0f} MB]" if outcome.peak_rss_mb else ""))
    return result


def _judge_ties(result: FrameworkResult, tie_runs: Sequence[Any], graph: Graph, x: np.ndarray, value: str,
                rtol: float, atol: float, say: Callable[[str], None]) -> None:
    """A masked-pooling net that failed: PASS only when the flips are near-ties and the reference with the
    framework's choices pinned agrees (:mod:`caffe2x.validation.ties`); else FAIL saying which."""
    from caffe2x.validation.ties import check_ties

    say(f"{result.name}: checking its mask choices against the reference with them pinned "
        f"({sum(r.stop - r.start for r in tie_runs)} image(s))")
    check = check_ties(graph, x, value, tie_runs, rtol, atol)
    result.near_ties = check.to_dict()
    if check.passed:
        result.status, result.reason = PASS, None
    else:
        result.reason = f"{result.reason}; {check.problem()}"


#: a model whose tensors hold at least this many bytes is validated with one child process per framework
#: that allows it (:attr:`Target.isolate <caffe2x.targets.Target.isolate>`), so each framework's memory is
#: returned when it is done; smaller ones run in this process (a child costs a fresh import of the framework)
ISOLATE_BYTES = 32 << 20

#: at most this many framework children at once (and never more than the cores)
MAX_SIDE_BY_SIDE = 2


class _Runs:
    """Runs each framework's :class:`~caffe2x.validation.framework_run.FrameworkJob` and each artifact's
    :class:`~caffe2x.validation.artifacts.ArtifactJob` here or in a child process."""

    def __init__(self, graph: Graph, run_dir: Path, isolate: bool | None) -> None:
        self.graph, self.run_dir, self.isolate = graph, run_dir, isolate
        self.x: np.ndarray | None = None
        self.ref_logits: np.ndarray | None = None
        self.shared: Path | None = None  # the children's shared file once written (at _shared_path)
        self._shared_path = run_dir / "shared.pkl"
        self._early: dict[str, Started] = {}  # target name -> its child started before the reference ran

    def inputs(self, x: np.ndarray, ref_logits: np.ndarray) -> None:
        """The batch and the reference's logits, once the reference has run."""
        self.x, self.ref_logits = x, ref_logits

    def start_early(self, targets: Sequence[Target]) -> None:
        """Start the children of the first group that runs in child processes now, each importing its
        framework (:func:`caffe2x.validation.isolated.start_early`) while this process reads the photos,
        runs the reference and the in-process frameworks. Only that group: it is what runs next, alone
        or side by side as planned, so no more frameworks are in memory at once than the plan allows."""
        first = next((g for g in self._plan(targets) if all(self.isolated(t) for t in g)), [])
        from caffe2x.validation.isolated import start_early

        for target in first:
            if target.available():
                self._early[target.name] = start_early(_modules(target), self._shared_path, self.run_dir)

    def close(self) -> None:
        """Stop every early child that was never given its job (the validation stopped before it)."""
        from caffe2x.validation.isolated import abandon

        for started in self._early.values():
            abandon(started)
        self._early.clear()

    def isolated(self, target: Target) -> bool:
        """A child process for ``target``: it allows one, the net uses no layer registered in this process
        only (a fresh process would not know it), and the model is big or ``isolate=True`` asked for it."""
        if self.isolate is False or not target.isolate or os.name != "posix":  # the child's pipe: pass_fds
            return False
        from caffe2x.plugins import REGISTERED_OPS

        if any(node.op in REGISTERED_OPS for node in self.graph.nodes):
            return False
        from caffe2x.graph.bounds import graph_bytes

        return bool(self.isolate) or graph_bytes(self.graph) >= ISOLATE_BYTES

    def groups(self, targets: Sequence[Target]) -> list[list[Target]]:
        """The order the frameworks run in: those that run in this process first, one at a time, then each
        that must run alone (:attr:`Target.runs_alone <caffe2x.targets.Target.runs_alone>`), then the
        other isolated ones side by side, as many at once as there are cores, two of them never writing
        the same file (a target that runs another's file waits for it to be written)."""
        if any(self.isolated(t) for t in targets) and not self._share():
            return [[t] for t in targets]
        return self._plan(targets)

    def _plan(self, targets: Sequence[Target]) -> list[list[Target]]:
        """:meth:`groups` once the children's shared file can be written."""
        here = [[t] for t in targets if not self.isolated(t)]
        alone = [[t] for t in targets if self.isolated(t) and t.runs_alone]
        rest = [t for t in targets if self.isolated(t) and not t.runs_alone]
        width = max(1, min(os.cpu_count() or 1, MAX_SIDE_BY_SIDE))
        together: list[list[Target]] = []
        for target in rest:
            group = together[-1] if together else None
            if (group is None or len(group) >= width or not target.writes
                    or any(writer_of(t).name == writer_of(target).name for t in group)):
                together.append([target])
            else:
                group.append(target)
        return here + alone + together

    def _share(self) -> bool:
        """Write the children's shared inputs once; False (every framework then runs in this process) when
        the graph holds something that cannot be pickled."""
        if self.shared is not None:
            return True
        import pickle

        from caffe2x.validation.isolated import write_shared

        assert self.x is not None and self.ref_logits is not None
        try:
            self.shared = write_shared(self._shared_path, self.graph, self.x, self.ref_logits)
        except (pickle.PicklingError, TypeError, AttributeError):  # a graph holding something unpicklable
            self.isolate = False
            self.close()  # every framework runs here now: the early children would only hold memory
            return False
        # the children read the weights from that file: this process, which mostly waits for them now,
        # lets the caffemodel's pages go (they come back from the page cache when read again)
        from caffe2x.graph.pages import release_all

        release_all(self.graph.tensors.values())
        return True

    def run(self, target: Target, job: FrameworkJob | ArtifactJob, say: Callable[[str], None],
            tick: Callable[[int], None]) -> Any:
        if not self.isolated(target):
            try:
                return job.execute(self.graph, self.x, self.ref_logits, say, tick)
            finally:
                release_memory()
        from caffe2x.validation.isolated import run_isolated

        if not self._share():
            return self.run(target, job, say, tick)
        assert self.shared is not None
        from caffe2x.validation.isolated import start_early

        # a child started now also imports its framework before the job (the collector paused, its objects
        # frozen), and is told to go as soon as it exists
        started = self._early.pop(target.name, None) or start_early(_modules(target), self.shared, self.run_dir)
        return run_isolated(job, self.shared, self.run_dir, say, tick, started=started)


def _modules(target: Target) -> list[str]:
    """What a child runs ``target`` with: the module of the target writing its file, then its own."""
    return list(dict.fromkeys(m for m in (writer_of(target).module, target.module) if m))


def _side_by_side(calls: Sequence[Callable[[], FrameworkResult]]) -> list[FrameworkResult]:
    """Every call's result, in order; several calls run in threads at once (each one waits on its child
    process, so the threads only pass its messages on). An interrupt or SIGTERM of this process, which
    reaches this thread only, stops every child (:func:`caffe2x.validation.isolated.stop_all`), then waits
    for the threads to see their child end, and is raised again."""
    if len(calls) == 1:
        return [calls[0]()]
    import threading

    from caffe2x.validation.isolated import stop_all

    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - raised again in the validating thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.1)  # a short wait, so that Ctrl-C and SIGTERM reach this thread at once
    except BaseException:
        stop_all()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
    return results


def run_inputs(model: Any, prototxt: Any, mean: Any, images: Any, against: Any, labels: Any) -> list[tuple[str, Any]]:
    """(role, path) of every file a validation reads, for :func:`caffe2x.fileio.refuse_collisions`."""
    def paths(value: Any) -> list[Any]:
        if value is None or isinstance(value, (np.ndarray, Graph)):
            return []
        if isinstance(value, (str, os.PathLike)):
            return [value]
        return [v for v in value if isinstance(v, (str, os.PathLike))]

    pairs: list[tuple[str, Any]] = []
    for role, value in (("model", model), ("prototxt", prototxt), ("mean file", mean), ("image", images),
                        (f"{option('against')} file", against), ("labels file", labels)):
        pairs += [(role, p) for p in paths(value)]
    return pairs


def _refuse_existing_artifacts(directory: Path, stem: str, targets: Sequence[Target], against: bool,
                               overwrite: bool) -> None:
    """Files validate would write into ``directory`` must not exist yet, unless ``overwrite``."""
    if overwrite:
        return
    from caffe2x.fileio import OutputExistsError

    for target in targets:
        for prefix in ("", "expected-") if against else ("",):
            path = directory / f"{prefix}{stem}{target.default_suffix}"
            if path.exists():
                raise OutputExistsError(f"{path} already exists; pass {option('overwrite', True)} to replace the "
                                        f"kept artifacts")


__all__ = ["validate", "read_labels", "Report", "FrameworkResult", "ArtifactResult", "TensorDifference",
           "Comparison", "SCHEMA", "PASS", "FAIL", "SKIP", "DEFAULT_RTOL", "DEFAULT_ATOL", "TOPK", "topk",
           "within", "compare_logits", "logits_blob", "check_artifact", "compare_tensors"]
