"""Write a graph to a target file: the library behind ``caffe2x.save`` and ``caffe2x convert``.

Options shared by every target (``dtype``, ``fold_bn``, ``profile``) are applied here once; each
target only knows its own file format. The file appears atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.errors import OPTIONS, Caffe2xError, option
from caffe2x.fileio import atomic_output, output_path
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import max_rel_error
from caffe2x.targets import WriteOptions, all_targets, get, names, target_for, writer_for_suffix

DTYPES = ("float32", "float16", "bfloat16")


def check_request(target: str, path: str | os.PathLike[str], *, dtype: str = "float32", profile: str | None = None,
                  options: dict[str, Any] | None = None) -> None:
    """Refuse, before any model is read, a request the target would ignore or reject after the work:
    an output suffix of another format, an option or naming profile of another target, a bad dtype.

    Options are named through :func:`caffe2x.errors.option`: keywords for the library, flags
    (``--emit-code``) when the command line prints the error.
    """
    writer = get(target)
    name = Path(path).name
    suffix = Path(path).suffix.lower()
    if suffix not in writer.suffixes:
        other = writer_for_suffix(suffix)
        why = f"{suffix} is the {other.name} target's suffix" if other else f"{suffix or 'no suffix'} is no target's suffix"
        asked = option("to", target)
        raise Caffe2xError(f"cannot write {name} as {target} ({asked}): {why}; the {target} target writes "
                           f"{', '.join(writer.suffixes)} files")
    if dtype not in DTYPES:
        raise Caffe2xError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if not options and profile is None:
        return  # nothing below to check: no need to list every target (which scans the entry points)
    writers = [t for t in all_targets() if t.writes]
    known_options = list(dict.fromkeys(o for t in writers for o in t.options))
    for key, value in (options or {}).items():
        if key not in known_options:
            raise Caffe2xError(f"unknown option {key!r}; known: {', '.join(known_options)}")
        if value and key not in writer.options:
            flag = option(key, True) if key in OPTIONS else key + "="
            owners = [t.name for t in writers if key in t.options]
            raise Caffe2xError(f"{flag} applies only to the {' and '.join(owners)} target, not to {target}")
    if profile is not None:
        owner = {p: t for t in reversed(writers) for p in t.profiles}
        known = ", ".join(f"{p} ({t.name})" for t in writers for p in t.profiles)
        if profile not in owner:
            raise Caffe2xError(f"unknown naming profile {profile!r} ({option('profile')}); known: {known}")
        if owner[profile] is not writer:
            raise Caffe2xError(f"{option('profile', profile)} applies only to the {owner[profile].name} target, not to {target}")
        if suffix not in writer.profiles[profile]:
            raise Caffe2xError(f"{option('profile', profile)} writes {' or '.join(writer.profiles[profile])} files only, "
                               f"not {name}")


def write(graph: Graph, path: str | os.PathLike[str], to: str | None = None, *, dtype: str = "float32",
          profile: str | None = None, fold_bn: bool = False, overwrite: bool = False, **extra: Any) -> list[str]:
    """Write ``graph`` as ``to`` (or the format ``path``'s suffix names); return notes for the user.

    Everything that can fail (the writer, the ``dtype`` measurement) runs before the file is renamed
    into place; an existing different file is kept unless ``overwrite``.
    """
    if not isinstance(graph, Graph):
        raise Caffe2xError(f"expected a caffe2x Graph (from caffe2x.load), got {type(graph).__name__}")
    dest = output_path(path)
    if to is not None and not isinstance(to, str):
        raise Caffe2xError(f"to must be a target name ({', '.join(names(writes=True))}), got {to!r:.60}")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise Caffe2xError(f"unknown dtype {dtype!r:.60}; choose one of {', '.join(DTYPES)}")
    if profile is not None and not isinstance(profile, str):
        raise Caffe2xError(f"profile must be a name, got {profile!r:.60}")
    target = target_for(to, dest)
    check_request(target, dest, dtype=dtype, profile=profile, options=extra)
    writer = get(target)
    if writer.module is not None:
        writer.implementation()  # a missing framework is reported before any work is done
    notes: list[str] = []
    if fold_bn:
        from caffe2x.graph.transforms import fold_bn_report

        graph, folds = fold_bn_report(graph)
        notes.append(folds.describe())
    from caffe2x.graph.checks import check_write_size

    check_write_size(graph, target, writer.write_copies, dtype)  # before the writer copies anything
    existed = dest.exists()
    options = WriteOptions(dtype=dtype, profile=profile, destination=dest, overwrite=overwrite, extra=dict(extra))
    itemsize = 4 if dtype == "float32" else 2
    size_hint = sum(t.size for t in graph.tensors.values()) * itemsize  # a lower bound of the file size
    with atomic_output(dest, overwrite=overwrite, size_hint=size_hint) as tmp:
        notes.extend(writer.write(graph, tmp, options))
        if dtype != "float32":  # measured before the rename: a failure here leaves no file behind
            notes.append(dtype_note(graph, dtype))
    if existed and not overwrite:
        notes.append(f"{dest} already held exactly this output; left unchanged")
    return notes


def default_output(model: str | os.PathLike[str], target: str) -> Path:
    """``resnet50.caffemodel`` -> ``resnet50<the target's default suffix>`` beside the model."""
    return Path(model).with_suffix(get(target).default_suffix)


def names_directory(output: str | os.PathLike[str]) -> bool:
    """True when ``output`` means a directory: it exists as one, or is spelled with a trailing slash."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


def output_in(directory: str | os.PathLike[str], model: str | os.PathLike[str], target: str) -> Path:
    """``out/`` + ``resnet50.caffemodel`` -> ``out/resnet50<the target's default suffix>``."""
    return Path(directory) / (Path(model).stem + get(target).default_suffix)


def dtype_note(graph: Graph, dtype: str, seed: int = 0) -> str:
    """Measure what rounding the tensors to ``dtype`` does to the net's outputs (numpy reference)."""
    from caffe2x.graph.reference import run
    from caffe2x.graph.transforms import rounded

    rng = np.random.default_rng(seed)
    x = {name: rng.standard_normal((1, *shape[1:])).astype(np.float32) for name, shape in graph.inputs.items()}
    blob = graph.blob_name(graph.logits()[0])
    exact = run(graph, x, outputs=[blob])
    approx = run(rounded(graph, dtype), x, outputs=[blob])
    (name,) = exact
    err = max_rel_error(approx[name], exact[name])
    return f"{dtype} tensors change output {name!r} by {err:.2e} max relative error (numpy reference, seeded input)"
