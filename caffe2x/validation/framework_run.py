"""One framework's part of a validation: write its file, load it back, run the batch one slice at a time
and compare every layer as its values come out, so memory holds one slice's values at a time.

Why slices and streaming: a whole ResNet-50 forward pass over 4 photos keeps ~0.75 GB of layer values
per framework, and one framework's process grew by ~760 MB running the 4 photos as one batch against
~180 MB one at a time. The comparison of a layer over the whole batch is a maximum (``max|a - b|`` and ``max|ref|``,
:func:`caffe2x.validation.comparison.within`), so accumulating both maxima slice by slice (:class:`LayerStat`) gives
exactly the numbers a comparison of the whole batch gives. The reference's values for each slice are
spilled to disk by the validator (:class:`RefSpill`) and read back memory-mapped, one slice at a time.

:func:`run_job` runs in the validating process or, for a big model, in a child process of its own
(:mod:`caffe2x.validation.isolated`) so that the framework's memory goes when the child exits.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caffe2x import convert
from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph import pages
from caffe2x.graph.ir import Graph, samples_independent
from caffe2x.validation.ties import TieRequest, TieRun


@dataclass
class LayerStat:
    """``max|a - b|`` and ``max|ref|`` of one value accumulated over slices of the batch: the same
    numbers :func:`caffe2x.validation.comparison.within` gives for the whole batch at once."""

    seen: bool = False      # the framework returned the value at least once
    broken: bool = False    # a slice's shape differed from the reference's
    finite: bool = True     # every returned number was finite
    size: int = 0
    max_abs: float = 0.0
    scale: float = 0.0

    def add(self, got: np.ndarray, ref: np.ndarray) -> None:
        self.seen = True
        a, b = np.asarray(got), np.asarray(ref)
        if a.shape != b.shape:
            self.broken = True
            return
        if not a.size:
            return
        self.size += a.size
        # the difference in float64 as comparison.within takes it; |ref| and finiteness are exact in the
        # arrays' own dtype (a fifth of the time of converting both arrays to float64 first)
        diff = np.subtract(a, b, dtype=np.float64)
        np.abs(diff, out=diff)
        # np.max propagates NaN, as the whole-batch maximum would (Python's max() would drop it)
        self.max_abs = float(np.max([self.max_abs, float(np.max(diff))]))
        del diff
        self.scale = float(np.max([self.scale, float(np.max(np.abs(b)))]))
        self.finite = self.finite and bool(np.all(np.isfinite(a)))

    def relative(self, rtol: float, atol: float) -> tuple[float, bool]:
        """(max rel error, whether within ``atol + rtol * max|ref|``), as :func:`~caffe2x.validation.comparison.within`."""
        if self.broken:
            return float("nan"), False
        if not self.size:
            return 0.0, True
        if not self.finite:
            return float("nan"), False
        rel = self.max_abs / self.scale if self.scale > 0 else self.max_abs
        return rel, self.max_abs <= atol + rtol * self.scale


@dataclass
class RefSpill:
    """The reference's per-layer values of every slice of the batch as ``.npy`` files in ``directory``
    (written by the validator once), read back memory-mapped one slice at a time by each framework."""

    directory: Path
    values: list[str]

    def _path(self, batch: int, index: int) -> Path:
        return self.directory / f"{batch}-{index}.npy"

    def save(self, batch: int, arrays: Mapping[str, np.ndarray]) -> None:
        for i, v in enumerate(self.values):
            np.save(self._path(batch, i), np.ascontiguousarray(arrays[v]), allow_pickle=False)

    def load(self, batch: int) -> dict[str, np.ndarray]:
        out = {}
        for i, v in enumerate(self.values):
            try:
                out[v] = np.load(self._path(batch, i), mmap_mode="r", allow_pickle=False)
            except ValueError:  # numpy cannot map an empty array
                out[v] = np.load(self._path(batch, i), allow_pickle=False)
        return out


@dataclass
class FrameworkJob:
    """What one framework does in a validation (picklable: it travels to a child process)."""

    target: str                          # registered target name
    artifact: Path                       # the file it runs
    writer: str | None                   # the target that writes ``artifact`` first; None: already written
    value: str                           # the logits value
    layer_values: list[str]              # values compared layer by layer (empty: logits only)
    batches: list[tuple[int, int]]       # slices [start, stop) of the batch, run one after the other
    spill: RefSpill | None = None        # the reference's layer values per slice (per-layer runs)
    ties: TieRequest | None = None       # a masked-pooling net: re-run failing slices with the masks

    def execute(self, graph: Graph, x: np.ndarray, ref_logits: np.ndarray, say: Callable[[str], None],
                tick: Callable[[int], None]) -> FrameworkOutcome:
        """:func:`run_job` (the interface :mod:`caffe2x.validation.isolated` runs a job through in a child)."""
        return run_job(self, graph, x, ref_logits, say, tick)

    def failed(self, reason: str) -> FrameworkOutcome:
        """The outcome of a job that could not report (its child process died)."""
        return FrameworkOutcome(reason=reason)


@dataclass
class FrameworkOutcome:
    """What :func:`run_job` found (picklable)."""

    written: bool = False
    loaded: bool = False
    prepare_seconds: float | None = None
    run_seconds: float | None = None
    logits: np.ndarray | None = None
    stats: dict[str, LayerStat] = field(default_factory=dict)
    reason: str | None = None            # why it failed (None: it ran)
    peak_rss_mb: float | None = None     # the child process's peak RSS (when it ran in one)
    tie_runs: list[TieRun] = field(default_factory=list)  # the failing slices re-run with their masks


def batches_for(n: int, images: bool, graph: Graph) -> list[tuple[int, int]]:
    """Photos run one at a time (each is a separate sample; a framework then holds one photo's
    activations) when the net treats its samples independently (:func:`caffe2x.graph.ir.samples_independent`:
    not SSD's DetectionOutput, which gathers the detections of the whole batch, nor BatchNorm with batch
    statistics); arrays (seeded Gaussian noise, ``--inputs``, Caffe's blobs) run as given, since their
    batch is the net's declared one."""
    if images and n > 1 and samples_independent(graph, n):
        return [(i, i + 1) for i in range(n)]
    return [(0, n)]


def run_job(job: FrameworkJob, graph: Graph, x: np.ndarray, ref_logits: np.ndarray,
            say: Callable[[str], None], tick: Callable[[int], None]) -> FrameworkOutcome:
    """Write (when asked), load back with the framework's own loader, run every slice, compare the layers
    as they come. A framework's failure is the outcome's ``reason``, never an exception (except memory
    exhaustion and interrupts)."""
    from caffe2x.targets import get, write_then_load

    name = job.target
    out = FrameworkOutcome()
    stage = "writing and loading"
    try:
        say(f"{name}: writing and loading back")
        t = time.perf_counter()
        with write_then_load():  # a target may reuse what its write built for this load
            if job.writer is not None:
                convert.write(graph, job.artifact, job.writer, overwrite=True)
            out.written = True
            runner = get(name).load(job.artifact, graph)
        out.loaded = True
        out.prepare_seconds = time.perf_counter() - t
        # the framework now runs its own copy of the weights (its file, its variables): the graph's pages
        # leave this process's memory while it runs, and come back from the page cache if read again
        # (ResNet-50: ~100 MB less in each of two framework children running side by side)
        pages.release_all(graph.tensors.values())
        stage = "running"
        say(f"{name}: running" + (f" with {len(job.layer_values)} values exposed" if job.layer_values else "")
            + (f", {len(job.batches)} images one at a time" if len(job.batches) > 1 else ""))
        t = time.perf_counter()
        wanted = list(dict.fromkeys([*job.layer_values, job.value]))
        stats = {v: LayerStat() for v in job.layer_values}
        parts = []
        for i, (start, stop) in enumerate(job.batches):
            xb = x[start:stop]
            refs = job.spill.load(i) if job.spill is not None else {}
            if hasattr(runner, "use_reference"):  # optional: a runner that would only repeat the reference run
                whole = (start, stop) == (0, len(x))  # the logits' first axis need not be the batch (a CRNN's time)
                runner.use_reference(xb, {**refs, job.value: ref_logits if whole else ref_logits[start:stop]})
            outs = runner.run(xb, wanted)
            if job.value not in outs:
                raise Caffe2xError(f"returned no value {job.value!r}")
            parts.append(np.asarray(outs[job.value], dtype=np.float32))
            for v, stat in stats.items():
                if v in outs:
                    if v in refs:
                        stat.add(outs[v], refs[v])
                    else:
                        stat.seen = stat.broken = True
            del outs, refs
            tick(i)
        out.run_seconds = time.perf_counter() - t
        out.logits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out.stats = stats
        if job.ties is not None:
            stage = "re-running with the masks"
            out.tie_runs = tie_runs(runner, job, x, out.logits, ref_logits, say)
        del runner
    except Caffe2xError as exc:
        out.reason = f"{stage} failed: {exc}"
    except ImportError as exc:
        out.reason = f"{stage} failed: cannot import {exc.name or exc}"
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a framework's own failure is a result, not a crash
        out.reason = f"{stage} failed: {type(exc).__name__}: {one_line(exc)}"
    return out


def tie_runs(runner: object, job: FrameworkJob, x: np.ndarray, logits: np.ndarray, ref_logits: np.ndarray,
             say: Callable[[str], None]) -> list[TieRun]:
    """The slices that fail the pass rule, run again with the masks of the net's masked poolings as extra
    outputs (:mod:`caffe2x.validation.ties`); logits and masks come from that one run. Only on failure:
    a net that agrees costs nothing more."""
    assert job.ties is not None
    failing = job.ties.failing(job.batches, logits, ref_logits)
    if not failing:
        return []
    say(f"{job.target}: re-running {len(failing)} slice(s) with the {len(job.ties.masks)} pooling mask(s) exposed")
    runs = []
    for i in failing:
        start, stop = job.batches[i]
        outs = runner.run(x[start:stop], list(dict.fromkeys([job.value, *job.ties.masks])))  # type: ignore[attr-defined]
        runs.append(TieRun(start, stop, np.asarray(outs[job.value], dtype=np.float32),
                           {m: np.asarray(outs[m], dtype=np.float32) for m in job.ties.masks if m in outs}))
        del outs
    return runs


def release_memory() -> None:
    """Give freed heap pages back to the system. glibc keeps freed memory for reuse: after the numpy
    target ran a 100 MB model in the validating process, that process stayed ~170 MB bigger while the
    next framework's child process ran. (A no-op where there is no glibc.)"""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def layer_curve(graph: Graph, stats: Mapping[str, LayerStat], rtol: float,
                atol: float) -> tuple[list[float | None], str | None, str | None]:
    """(max rel error of every layer's outputs, the first layer past tolerance, the worst layer)."""
    curve: list[float | None] = []
    first, worst, worst_err = None, None, -1.0
    for node in graph.nodes:
        errs, bad = [], False
        for v in node.outputs:
            stat = stats.get(v)
            if stat is None or not stat.seen:
                continue
            rel, ok = stat.relative(rtol, atol)
            errs.append(rel)
            bad = bad or not ok
        err = None if not errs else (float("nan") if any(not math.isfinite(e) for e in errs) else max(errs))
        curve.append(err)
        if bad and first is None:
            first = node.name
        if err is not None and math.isfinite(err) and err > worst_err:
            worst, worst_err = node.name, err
    return curve, first, worst if worst_err > 0 else None


def spill_reference(graph: Graph, x: np.ndarray, batches: Sequence[tuple[int, int]], layer_values: Sequence[str],
                    keep: set[str], directory: Path) -> tuple[dict[str, np.ndarray], RefSpill]:
    """Run the reference slice by slice: every layer value goes to disk (:class:`RefSpill`), the values in
    ``keep`` (the logits, Caffe's blobs) stay in memory, concatenated over the slices."""
    from caffe2x.graph.reference import execute

    spill = RefSpill(directory, list(dict.fromkeys(layer_values)))
    kept: dict[str, list[np.ndarray]] = {v: [] for v in keep}
    for i, (start, stop) in enumerate(batches):
        values = execute(graph, x[start:stop], keep=set(spill.values) | keep)
        spill.save(i, values)
        for v in keep:
            kept[v].append(values[v])
        del values
    return {v: parts[0] if len(parts) == 1 else np.concatenate(parts) for v, parts in kept.items()}, spill
