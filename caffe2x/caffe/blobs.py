"""Caffe's own numbers as the reference: ``validate --caffe-blobs blobs.npz --inputs x.npy``.

A user who still has Caffe dumps ``net.blobs[name].data`` after a forward pass (the script is in
``docs/caffe-blobs.md``) into an ``.npz`` or ``.h5`` keyed by blob name, with the input batch in
``.npy`` / ``.npz`` (or in the blobs file under the input blob's name). The validator then runs that
batch, compares the numpy reference with **every** blob in the file (a blob is its final value, as
pycaffe shows it: :meth:`caffe2x.graph.ir.Graph.value`) and, when the file holds the logits, compares every
framework with Caffe's logits instead of caffe2x's. A blob past tolerance is named in the report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.numeric import within

PathLike = str | os.PathLike[str]


@dataclass
class BlobCheck:
    """One Caffe blob against the numpy reference's value of that blob."""

    blob: str
    shape: list[int]
    max_abs: float
    max_rel: float
    passed: bool

    def to_dict(self) -> dict[str, object]:
        return {"blob": self.blob, "shape": self.shape, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "status": "PASS" if self.passed else "FAIL"}


def read_arrays(path: PathLike, what: str) -> dict[str, np.ndarray]:
    """Named float arrays from an ``.npz`` (no pickles), an ``.h5`` (top-level datasets) or an ``.npy``
    (one array, named ``''``), each checked against the byte budget by its declared size first."""
    from caffe2x.graph.bounds import budget

    p = Path(path)
    if not p.is_file():
        raise Caffe2xError(f"{p}: no such {what} file")
    cap = budget(None)
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            arrays = {"": arr}
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix in (".h5", ".hdf5"):
            import h5py

            from caffe2x.graph.bounds import check_h5

            check_h5(p)
            with h5py.File(p, "r") as f:
                arrays = {k: np.asarray(f[k]) for k in f if isinstance(f[k], h5py.Dataset)}
        else:
            raise Caffe2xError(f"{p.name}: a {what} file is .npz, .h5 or .npy, not {suffix or 'suffix-less'}")
    except (OSError, ValueError, KeyError) as exc:
        raise Caffe2xError(f"{p.name}: cannot read the {what} file: {exc}") from None
    total = sum(int(a.nbytes) for a in arrays.values())
    if total > cap:
        raise Caffe2xError(f"{p.name}: {total:,} bytes of arrays exceed the budget of {cap:,} (CAFFE2X_MAX_BYTES)")
    out = {}
    for k, a in arrays.items():
        if not np.issubdtype(a.dtype, np.number):
            raise Caffe2xError(f"{p.name}: array {k!r} is {a.dtype}, not numbers")
        out[k] = np.asarray(a, dtype=np.float32)
    return out


def read_inputs(path: PathLike, input_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The input batch of ``--inputs x.npy|x.npz`` (an ``.npz`` with one array, or one named after the
    input blob), checked against the net's input shape (any batch size)."""
    arrays = read_arrays(path, "inputs")
    if len(arrays) == 1:
        (x,) = arrays.values()
    elif input_name in arrays:
        x = arrays[input_name]
    else:
        raise Caffe2xError(f"{Path(path).name}: holds {len(arrays)} arrays and none named {input_name!r}")
    return check_input(x, shape, Path(path).name)


def check_input(x: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    if x.ndim == len(shape) - 1:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise Caffe2xError(f"{where}: input of shape {list(x.shape)} does not fit the net's input {list(shape)}")
    return np.ascontiguousarray(x, dtype=np.float32)


def blob_values(graph: Graph, blobs: dict[str, np.ndarray], source: str) -> dict[str, str]:
    """Blob name -> graph value holding its final value, for every blob of the file the graph has
    (input blobs excepted); a file sharing no blob with the net is an error."""
    out = {name: graph.blobs[name] for name in blobs if name in graph.blobs and name not in graph.inputs}
    if not out:
        raise Caffe2xError(f"{source}: none of its {len(blobs)} arrays names a blob of the net")
    return out


def compare_blobs(blobs: dict[str, np.ndarray], values: dict[str, str], ref: dict[str, np.ndarray],
                  rtol: float, atol: float) -> list[BlobCheck]:
    """Each Caffe blob against the reference's value, in the file's order."""
    checks = []
    for blob, value in values.items():
        want, got = blobs[blob], ref[value]
        if want.shape != got.shape:
            if want.size == got.size:
                want = want.reshape(got.shape)
            else:
                checks.append(BlobCheck(blob, list(want.shape), float("nan"), float("nan"), False))
                continue
        max_abs, max_rel, ok = within(got, want, rtol, atol)
        checks.append(BlobCheck(blob, list(want.shape), max_abs, max_rel, ok))
    return checks
