"""``caffe2x evaluate``: accuracy and parity of every framework over a whole image set.

``validate`` proves on a handful of photos that every framework gives the same logits; ``evaluate``
answers the next question over a whole set (ImageNet val's 50,000 images): top-1 / top-5 accuracy of
each framework against the labels, how often each agrees with the numpy reference (top-1 class, top-5
set), the largest logit difference, and which images the frameworks disagree on.

How a run goes: the image list is read and every file checked to exist (:mod:`.inputs`); the model is
read here once to check the labels against its classes; the journal is opened (:mod:`.journal`); the
batches not yet in it go to the engine (:mod:`.engines`: a local process pool or Ray actors), whose
workers (:mod:`.worker`) decode, preprocess with ``validate``'s code, run the reference and every
framework, and send back one small record per image, journalled as each batch finishes; finally the
figures are counted from the journal in order (:mod:`.report`). Memory stays flat however long the
list: per-image results live in the journal on disk, at most two batches per worker are in flight.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caffe2x.errors import Caffe2xError, option

PathLike = str | os.PathLike[str]

DEFAULT_BATCH = 16
MAX_BATCH = 4096
EXIT_OK, EXIT_DIFFERENT, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class EvaluationReport:
    """The report (``data``: the JSON form, schema ``caffe2x.evaluate/1``) and the exit code it means."""

    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def exit_code(self) -> int:
        """0: every framework agrees within tolerance; 2: some images could not be decoded (bad input);
        1: otherwise (a framework's logits past tolerance)."""
        if self.data["unreadable_total"]:
            return EXIT_BAD_INPUT
        return EXIT_OK if self.passed else EXIT_DIFFERENT

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _choose_frameworks(frameworks: Sequence[str] | None, say: Callable[[str], None]) -> tuple[list[str], list[dict[str, str]]]:
    from caffe2x.targets import get, names
    from caffe2x.validation.evaluate.worker import REFERENCE

    runnable = names(runs=True)
    explicit = frameworks is not None
    chosen = list(dict.fromkeys(frameworks)) if frameworks is not None else list(runnable)
    unknown = [n for n in chosen if n not in runnable]
    if unknown:
        raise Caffe2xError(f"unknown framework {unknown[0]!r}; choose from {', '.join(runnable)}")
    out, skipped = [REFERENCE], []
    for name in chosen:
        if name == REFERENCE:
            continue
        target = get(name)
        if not target.available():
            why = target.unavailable_reason()
            if explicit:
                raise Caffe2xError(f"framework {name!r} was asked for but {why}")
            skipped.append({"name": name, "reason": why})
            say(f"{name}: skipped, {why}")
            continue
        out.append(name)
    return out, skipped


def _positive(value: Any, what: str, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (upper is not None and value > upper):
        raise Caffe2xError(f"{what} must be a whole number from 1" + (f" to {upper}" if upper else "")
                           + f", got {value!r}")
    return value


def evaluate(model: PathLike | None, prototxt: PathLike | None = None, *, images: PathLike,
             list_file: PathLike | None = None, frameworks: Sequence[str] | None = None,
             batch_size: int = DEFAULT_BATCH, engine: str = "local", workers: int | None = None,
             ray_address: str | None = None, limit: int | None = None, resume: bool = False,
             journal: PathLike | None = None, force: bool = False, json_path: PathLike | None = None,
             per_image: PathLike | None = None, html_path: PathLike | None = None,
             mean: PathLike | None = None, mean_values: Sequence[float] | None = None,
             rtol: float | None = None, atol: float | None = None, input_shape: Sequence[int] | None = None,
             outputs: str | Sequence[str] | None = None, proto: PathLike | None = None,
             progress: Callable[[str], None] | None = None, progress_bar: bool = False) -> EvaluationReport:
    """Evaluate ``model`` (with ``prototxt``) on every image of ``images`` in every framework.

    ``images``: a folder (recursive, sorted) or a file listing image paths; with ``list_file`` (Caffe's
    ``path label`` list) the folder its paths are relative to. ``frameworks``: the targets to run
    (default: every installed one; the numpy reference always runs and is reported first).
    ``engine``: ``"local"`` (``workers`` processes, default the core count) or ``"ray"``
    (``ray_address``: an existing cluster; default: the Ray session of this process, else a local one).
    ``journal``: the folder recording finished batches (default: a temporary one, gone afterwards);
    ``resume`` continues it, ``force`` replaces another one. ``json_path``/``per_image``/``html_path``:
    the report, one CSV row per image, the HTML plot (written atomically). ``rtol``/``atol``: the pass rule
    of ``validate`` (``max|a - b| <= atol + rtol * max|ref|`` over the set). ``progress``: one-line
    messages; ``progress_bar``: a tqdm bar on stderr. Bad input raises :class:`~caffe2x.Caffe2xError`
    before any image is run.
    """
    from caffe2x.validation.comparison import DEFAULT_ATOL, DEFAULT_RTOL, logits_blob
    from caffe2x.validation.evaluate.engines import ENGINES
    from caffe2x.validation.evaluate.inputs import check_labels, image_set
    from caffe2x.validation.evaluate.report import check_outputs

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    rtol = DEFAULT_RTOL if rtol is None else rtol
    atol = DEFAULT_ATOL if atol is None else atol
    for tol_name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise Caffe2xError(f"{tol_name} must be a finite number >= 0, got {tol!r}")
    if engine not in ENGINES:
        raise Caffe2xError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    batch_size = _positive(batch_size, "the batch size", MAX_BATCH)
    workers = _positive(os.cpu_count() or 1 if workers is None else workers, "the number of workers", 1024)
    if engine == "ray":
        from caffe2x.validation.evaluate.engines.ray import _import_ray

        _import_ray()
    elif ray_address is not None:
        raise Caffe2xError(f"{option('ray_address')} is for {option('engine', 'ray')}")
    if resume and journal is None:
        raise Caffe2xError("resuming needs the journal folder of the interrupted run (journal=...)")
    check_outputs([("report", json_path), ("per-image CSV", per_image), ("HTML report", html_path)])
    inputs_ = [("model", model), ("prototxt", prototxt), ("mean file", mean), ("image list", list_file)]
    from caffe2x.fileio import refuse_collisions

    refuse_collisions([("report", json_path), ("per-image CSV", per_image), ("HTML report", html_path)],
                      [(r, p) for r, p in inputs_ if p is not None])

    chosen, skipped = _choose_frameworks(frameworks, say)
    imageset = image_set(images, list_file, limit)
    say(f"{len(imageset.entries)} images" + (f" with labels from {list_file}" if list_file else "")
        + f" under {imageset.root}")

    from caffe2x.loading import read_model as read

    if isinstance(outputs, str):
        outputs = [o for o in outputs.split(",") if o]
    say(f"reading {model}" + (f" with {prototxt}" if prototxt else ""))
    graph = read(model, prototxt, input_shape, outputs=outputs, proto=proto)
    if len(graph.inputs) != 1:
        raise Caffe2xError(f"evaluate runs single-input nets; this one has {len(graph.inputs)} "
                           f"({', '.join(graph.inputs)})")
    (input_name, shape), = graph.inputs.items()
    if len(shape) != 4 or shape[1] != 3:
        raise Caffe2xError(f"evaluate feeds images to a 3-channel N x 3 x H x W input; the net's input "
                           f"{input_name!r} is {list(shape)}")
    blob, value, _note = logits_blob(graph)
    import numpy as np

    if value not in graph.shapes:
        from caffe2x.graph.ir import infer_shapes

        infer_shapes(graph)
    classes = int(np.prod(graph.shapes[value][1:]))
    check_labels(imageset, classes)
    from caffe2x.graph.ir import samples_independent

    if batch_size > 1 and not samples_independent(graph, batch_size):
        say("note: this net's samples are not independent within a batch (batch statistics or a layer over "
            "the whole batch): running one image at a time")
        batch_size = 1
    from caffe2x.graph.checks import check_run_size

    check_run_size(graph, batch_size, what=f"a batch of {batch_size} images")
    from caffe2x.validation.evaluate.worker import ModelSpec
    from caffe2x.validation.preprocess import Mean

    mean_ = Mean.resolve(mean, mean_values)  # a bad mean file fails here, before any work
    spec = ModelSpec(None if model is None else str(Path(model).resolve()),
                     None if prototxt is None else str(Path(prototxt).resolve()),
                     None if input_shape is None else tuple(int(d) for d in input_shape),
                     None if not outputs else tuple(outputs), None if proto is None else str(Path(proto).resolve()),
                     None if mean is None else str(Path(mean).resolve()),
                     None if mean_values is None else tuple(float(v) for v in mean_values), tuple(chosen))

    entries = imageset.entries
    batches = [[(e.index, str(e.path), e.label) for e in entries[s:s + batch_size]]
               for s in range(0, len(entries), batch_size)]
    parts = _identity(spec, imageset, batch_size, limit)
    from caffe2x.validation.evaluate.journal import Journal

    own_journal = journal is None
    folder = Path(tempfile.mkdtemp(prefix="caffe2x-evaluate-journal-")) if own_journal else Path(journal)
    try:
        book, done = Journal.open(folder, parts, len(entries), len(batches), resume=resume, force=force)
        done_set = set(done)
        already = sum(len(batches[b]) for b in done_set)
        if resume:
            say(f"resuming: {already} of {len(entries)} images already done ({len(done_set)} batches), "
                f"{len(entries) - already} to go" if done_set else "resuming: nothing in the journal yet; starting")
        work = [(b, items) for b, items in enumerate(batches) if b not in done_set]
        bar = _bar(len(entries), already, progress_bar)
        ran = 0

        def finished(number: int, count: int, payload: dict[str, Any]) -> None:
            nonlocal ran
            book.record(number, payload)
            ran += count
            bar.update(count)

        run_started = time.perf_counter()
        try:
            if engine == "ray":
                from caffe2x.validation.evaluate.engines.ray import run_ray

                run_ray(spec, work, workers, finished, _above(say, bar), ray_address)
            else:
                from caffe2x.validation.evaluate.engines.local import run_local

                run_local(spec, work, workers, finished, _above(say, bar))
        finally:
            bar.close()
        run_seconds = time.perf_counter() - run_started
        data, figs = _report(book, chosen, batches, imageset, per_image, spec, graph, blob, engine, workers,
                             batch_size, rtol, atol, skipped, mean_, already)
        data["seconds"] = time.perf_counter() - started
        data["images_per_second"] = ran / run_seconds if ran and run_seconds > 0 else None
        _write_outputs(data, figs, json_path, html_path)
    except BaseException:
        if own_journal:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if own_journal:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        book.remove()
    return EvaluationReport(data)


def _identity(spec: Any, imageset: Any, batch_size: int, limit: int | None) -> dict[str, Any]:
    """The parts of the journal's hash (see :mod:`.journal`)."""
    from caffe2x._version import __version__
    from caffe2x.validation.evaluate.journal import entries_digest, file_digest

    parts: dict[str, Any] = {k: (file_digest(p) if p is not None else None)
                             for k, p in (("model", spec.model), ("prototxt", spec.prototxt), ("proto", spec.proto),
                                          ("mean", spec.mean))}
    parts["images"] = entries_digest((e.name, e.label) for e in imageset.entries)
    parts["flags"] = {"frameworks": list(spec.frameworks), "batch_size": batch_size,
                      "mean_values": None if spec.mean_values is None else list(spec.mean_values),
                      "input_shape": None if spec.input_shape is None else list(spec.input_shape),
                      "outputs": None if spec.outputs is None else list(spec.outputs), "limit": limit,
                      "caffe2x": __version__}
    return parts


def _report(book: Any, chosen: list[str], batches: list[Any], imageset: Any, per_image: PathLike | None,
            spec: Any, graph: Any, blob: str, engine: str, workers: int, batch_size: int, rtol: float,
            atol: float, skipped: list[dict[str, str]], mean_: Any, already: int) -> tuple[dict[str, Any], Any]:
    from caffe2x.validation.evaluate.report import SCHEMA, count, framework_dicts

    entries = imageset.entries

    def describe(index: int) -> dict[str, Any]:
        e = entries[index]
        return {"index": index, "image": e.name, "line": e.line}

    if per_image is not None:
        from caffe2x.fileio import atomic_output

        with atomic_output(per_image, overwrite=True) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                figs = count(book, chosen, batches, describe, f)
    else:
        figs = count(book, chosen, batches, describe)
    fws = framework_dicts(figs, imageset.labelled, rtol, atol)
    failures = [f"{f['name']}: max rel {f['max_rel'] if f['max_rel'] is not None else 'nan'} exceeds rtol {rtol:g}"
                + (f" + atol {atol:g}" if atol else "") for f in fws if not f["within_tolerance"]]
    if figs.unreadable_total:
        failures.append(f"{figs.unreadable_total} image(s) could not be decoded")
    if not figs.images:
        failures.append("no image could be evaluated")
    data = {
        "schema": SCHEMA, "passed": not failures, "model": spec.model and str(spec.model),
        "prototxt": spec.prototxt, "logits_blob": blob, "images": figs.images, "listed": len(entries),
        "labelled": imageset.labelled, "list": None if imageset.listing is None else str(imageset.listing),
        "root": str(imageset.root), "engine": engine, "workers": workers, "batch_size": batch_size,
        "mean": mean_.describe(), "rtol": float(rtol), "atol": float(atol), "frameworks": fws,
        "skipped": skipped, "disagreements": figs.disagreements, "disagreements_total": figs.disagreements_total,
        "unreadable": figs.unreadable, "unreadable_total": figs.unreadable_total, "resumed": already,
        "failures": failures, "seconds": 0.0, "images_per_second": None,
    }
    return data, figs


def _write_outputs(data: dict[str, Any], figs: Any, json_path: PathLike | None, html_path: PathLike | None) -> None:
    from caffe2x.fileio import atomic_output
    from caffe2x.validation.evaluate.report import render_html, render_json

    if json_path is not None:
        with atomic_output(json_path, overwrite=True) as tmp:
            tmp.write_text(render_json(data), encoding="utf-8")
    if html_path is not None:
        with atomic_output(html_path, overwrite=True) as tmp:
            tmp.write_text(render_html(data, figs), encoding="utf-8")


class _NoBar:
    def update(self, _n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def _bar(total: int, initial: int, shown: bool) -> Any:
    """A tqdm bar over the images (images/s, ETA) on stderr, or a silent stand-in."""
    if not shown:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="evaluate", unit="img", file=sys.stderr, leave=False,
                smoothing=0.1)


def _above(say: Callable[[str], None], bar: Any) -> Callable[[str], None]:
    if isinstance(bar, _NoBar):
        return say

    def write(message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    return write


__all__ = ["evaluate", "EvaluationReport", "DEFAULT_BATCH"]
