"""Write a graph to a target file: the library behind ``caffe2x.save`` and ``caffe2x convert``.

Options shared by every target (``dtype``, ``fold_bn``, ``profile``) are applied here once; each
target module only knows its own file format. The file appears atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Caffe2xError
from .fileio import atomic_output
from .ir import Graph
from .numeric import max_rel_error
from .targets import DEFAULT_SUFFIX, WriteOptions, load_target, target_for

DTYPES = ("float32", "float16", "bfloat16")


def write(graph: Graph, path: str | os.PathLike[str], to: str | None = None, *, dtype: str = "float32",
          profile: str | None = None, fold_bn: bool = False, **extra: Any) -> list[str]:
    """Write ``graph`` as ``to`` (or the format ``path``'s suffix names); return notes for the user."""
    target = target_for(to, path)
    if dtype not in DTYPES:
        raise Caffe2xError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    module = load_target(target)
    suffixes = getattr(module, "SUFFIXES", ())
    if Path(path).suffix.lower() not in suffixes:
        raise Caffe2xError(f"the {target} target writes {', '.join(suffixes)} files, not {Path(path).name!r}")
    if fold_bn:
        from .transforms import fold_bn as _fold

        graph = _fold(graph)
    options = WriteOptions(dtype=dtype, profile=profile, destination=Path(path), extra=dict(extra))
    with atomic_output(path) as tmp:
        notes = list(module.write(graph, tmp, options))
    if dtype != "float32":
        notes.append(dtype_note(graph, dtype))
    return notes


def default_output(model: str | os.PathLike[str], target: str) -> Path:
    """``resnet50.caffemodel`` + torch -> ``resnet50.pt`` beside the model."""
    return Path(model).with_suffix(DEFAULT_SUFFIX[target])


def dtype_note(graph: Graph, dtype: str, seed: int = 0) -> str:
    """Measure what rounding the tensors to ``dtype`` does to the net's outputs (numpy reference)."""
    from .reference import run
    from .transforms import rounded

    rng = np.random.default_rng(seed)
    x = {name: rng.standard_normal((1, *shape[1:])).astype(np.float32) for name, shape in graph.inputs.items()}
    blob = graph.blob_name(graph.logits()[0])
    exact = run(graph, x, outputs=[blob])
    approx = run(rounded(graph, dtype), x, outputs=[blob])
    (name,) = exact
    err = max_rel_error(approx[name], exact[name])
    return f"{dtype} tensors change output {name!r} by {err:.2e} max relative error (numpy reference, seeded input)"
