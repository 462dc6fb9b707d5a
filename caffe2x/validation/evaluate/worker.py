"""One worker of an evaluation: the model read once, every framework loaded once, batches run on demand.

A worker (a process of the local pool, or a Ray actor) builds an :class:`Evaluator` from a
:class:`ModelSpec` and then answers :meth:`Evaluator.run_batch` calls. Each call decodes and preprocesses
its images with the code ``validate`` uses (:func:`caffe2x.validation.preprocess.load_image` and
:func:`~caffe2x.validation.preprocess.transform_rgb`), runs the numpy reference and every framework on the whole
batch, and returns one small record per image (top-5 of each framework, its largest logit difference
from the reference, the reference's largest logit): the logits themselves never leave the worker.
Both engines call the same method on batches of the same images, so their figures are identical.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError, one_line

#: the reference framework: its logits are what every framework is compared with
REFERENCE = "numpy"


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to build the model and its inputs (picklable: it travels to workers)."""

    model: str | None
    prototxt: str | None
    input_shape: tuple[int, ...] | None
    outputs: tuple[str, ...] | None
    proto: str | None
    mean: str | None
    mean_values: tuple[float, ...] | None
    frameworks: tuple[str, ...]           # the reference first

    def files(self) -> dict[str, str]:
        """The files the worker reads, by field name (shipped once to a Ray cluster)."""
        return {k: v for k in ("model", "prototxt", "proto", "mean") if (v := getattr(self, k)) is not None}

    def relocated(self, paths: dict[str, str]) -> "ModelSpec":
        """The same spec reading its files from ``paths`` (field name -> local path)."""
        return replace(self, **paths)


@dataclass
class ImageRecord:
    """What one image gave: the top-5 classes of every framework, each framework's ``max|logit - ref|``
    and the reference's ``max|logit|`` (NaN when a framework's logits are not finite)."""

    index: int
    label: int | None
    top5: dict[str, list[int]]
    max_abs: dict[str, float]
    scale: float

    def to_json(self) -> dict[str, Any]:
        return {"i": self.index, "label": self.label, "top5": self.top5, "max_abs": self.max_abs,
                "scale": self.scale}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ImageRecord":
        return cls(int(d["i"]), None if d["label"] is None else int(d["label"]),
                   {k: [int(c) for c in v] for k, v in d["top5"].items()},
                   {k: float(v) for k, v in d["max_abs"].items()}, float(d["scale"]))


def _topk(flat: np.ndarray, k: int = 5) -> list[list[int]]:
    from caffe2x.validation.comparison import topk

    return topk(flat, k)


class Evaluator:
    """A worker's model: the graph, the preprocessing, and one loaded runner per framework."""

    def __init__(self, spec: ModelSpec) -> None:
        from caffe2x.validation.comparison import logits_blob
        from caffe2x.validation.preprocess import Mean, resize_size

        self.spec = spec
        from caffe2x.loading import read_model as read

        self.graph = read(spec.model, spec.prototxt, spec.input_shape,
                          outputs=list(spec.outputs) if spec.outputs else None, proto=spec.proto)
        _, self.value, _ = logits_blob(self.graph)
        (shape,) = self.graph.inputs.values()
        self.height, self.width = int(shape[2]), int(shape[3])
        self.mean = Mean.resolve(spec.mean, spec.mean_values)
        self.resize = resize_size(self.height, self.width)
        self.workdir = Path(tempfile.mkdtemp(prefix="caffe2x-evaluate-worker-"))
        self.runners: dict[str, Any] = {}
        try:
            self._load_frameworks()
        except BaseException:
            self.close()
            raise

    def _load_frameworks(self) -> None:
        """Write each framework's file into the worker's own folder and load it back with the
        framework's own loader, once (a suffix's writer writes its file once for every target reading it)."""
        from caffe2x import convert
        from caffe2x.targets import get, write_then_load, writer_of

        written: dict[str, Path] = {}
        for name in self.spec.frameworks:
            if name == REFERENCE:
                continue
            target = get(name)
            writer = writer_of(target)
            try:
                with write_then_load():
                    path = written.get(writer.name)
                    if path is None:
                        path = self.workdir / f"model.{writer.name}{target.default_suffix}"
                        convert.write(self.graph, path, writer.name, overwrite=True)
                        written[writer.name] = path
                    self.runners[name] = target.load(path, self.graph)
            except Caffe2xError as exc:
                raise Caffe2xError(f"{name}: writing and loading the model failed: {exc}") from None
            except ImportError as exc:
                raise Caffe2xError(f"{name}: cannot import {exc.name or exc}") from None

    def close(self) -> None:
        self.runners.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def preprocess(self, path: str, data: bytes | None = None) -> np.ndarray:
        """One image as the net's input (3, H, W): the very code ``validate`` runs."""
        from caffe2x.validation.preprocess import load_image, transform_rgb

        return transform_rgb(np.asarray(load_image(path, data)), self.height, self.width, self.mean, self.resize)

    def logits(self, name: str, x: np.ndarray) -> np.ndarray:
        """``(N, classes)`` float32 logits of framework ``name`` on the batch ``x``."""
        if name == REFERENCE:
            from caffe2x.graph.reference import execute

            out = execute(self.graph, x, keep={self.value})[self.value]
        else:
            try:
                out = self.runners[name].run(x, [self.value])[self.value]
            except Caffe2xError as exc:
                raise Caffe2xError(f"{name}: running failed: {exc}") from None
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - a framework's own failure, said in one line
                raise Caffe2xError(f"{name}: running failed: {type(exc).__name__}: {one_line(exc)}") from None
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)

    def run_batch(self, items: list[tuple[int, str, int | None]],
                  data: list[bytes] | None = None) -> dict[str, Any]:
        """Records of a batch: ``items`` are (index, path, label); ``data`` the files' bytes when the
        worker cannot read the paths itself (a Ray node). Undecodable images come back in ``unreadable``
        with the reason, and are left out of the forward pass."""
        arrays, kept, unreadable = [], [], []
        for j, (index, path, label) in enumerate(items):
            try:
                arrays.append(self.preprocess(path, None if data is None else data[j]))
            except Caffe2xError as exc:
                unreadable.append({"i": index, "reason": str(exc)})
                continue
            kept.append((index, label))
        records: list[dict[str, Any]] = []
        if arrays:
            x = np.stack(arrays)
            del arrays
            ref = self.logits(REFERENCE, x).astype(np.float64)
            scale = np.max(np.abs(ref), axis=1)
            tops = {REFERENCE: _topk(ref)}
            errs = {REFERENCE: np.zeros(len(x))}
            for name in self.spec.frameworks:
                if name == REFERENCE:
                    continue
                got = self.logits(name, x)
                if got.shape != ref.shape:
                    raise Caffe2xError(f"{name}: logits of shape {list(got.shape)}, the reference's "
                                       f"{list(ref.shape)}")
                finite = np.all(np.isfinite(got), axis=1)
                err = np.max(np.abs(got.astype(np.float64) - ref), axis=1)
                errs[name] = np.where(finite, err, np.nan)
                tops[name] = [t if ok else [-1] for t, ok in zip(_topk(np.where(np.isfinite(got), got, 0)), finite)]
            for j, (index, label) in enumerate(kept):
                records.append(ImageRecord(index, label, {n: tops[n][j] for n in tops},
                                           {n: float(errs[n][j]) for n in errs}, float(scale[j])).to_json())
        return {"records": records, "unreadable": unreadable}


def limit_threads(workers: int) -> None:
    """Each of ``workers`` processes sharing this machine's cores runs its BLAS on its share of them, so
    the pool does not oversubscribe the CPU (the frameworks' own runners set their own thread counts).
    Both engines call this with the same count, so their numbers come from the same arithmetic."""
    from threadpoolctl import threadpool_limits

    share = max(1, (os.cpu_count() or 1) // max(1, workers))
    global _LIMITS
    _LIMITS = threadpool_limits(limits=share, user_api="blas")


_LIMITS: Any = None
