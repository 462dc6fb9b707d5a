"""Keras' HDF5 weights layout written with h5py (what ``model.load_weights('x.h5')`` reads)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np


#: Keras' HDF5 attribute size limit; longer name lists are split into name0, name1, ... as Keras does
_HDF5_OBJECT_HEADER_LIMIT = 64512


def _write_name_list(obj: h5py.Group, name: str, names: list[str]) -> None:
    """Store a list of names as Keras does: bytes array, split over name0, name1… past HDF5's limit."""
    data = np.array([n.encode("utf8") for n in names]) if names else np.array([], dtype="S1")
    chunks = 1
    while any(c.nbytes > _HDF5_OBJECT_HEADER_LIMIT for c in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
    else:
        for i, chunk in enumerate(np.array_split(data, chunks)):
            obj.attrs[f"{name}{i}"] = chunk


@dataclass
class Rows:
    """A weight read a slice of leading-axis rows at a time (``read(start, stop)``), so writing a big
    one (VGG-16's 411 MB fc6 kernel) never holds a full copy of it beside the variable."""

    shape: tuple[int, ...]
    dtype: Any
    read: Callable[[int, int], np.ndarray]

    def write_into(self, group: h5py.Group, name: str) -> None:
        dataset = group.create_dataset(name, shape=self.shape, dtype=self.dtype)
        rows = max(1, ROWS_BYTES // max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * np.dtype(self.dtype).itemsize))
        for start in range(0, self.shape[0], rows):
            dataset[start:start + rows] = self.read(start, min(start + rows, self.shape[0]))


#: the size of the slices :class:`Rows` reads
ROWS_BYTES = 32 << 20

#: a weight's value, a function giving it when it is written, or :class:`Rows` (so only one value, or
#: one slice of a big one, is materialised at a time)
Value = np.ndarray | Callable[[], np.ndarray] | Rows


def _write_h5_layers(path: Path, layers: list[tuple[str, list[tuple[str, Value]]]],
                     attrs: dict[str, Any] | None = None) -> None:
    """Keras' HDF5 weights layout: ``layer_names``; per layer ``weight_names`` and the datasets;
    ``attrs`` are extra root attributes (Keras ignores them; caffe2x records a profile's bound there)."""
    # written through a Python file object (h5py's fileobj driver), not by HDF5's own file driver, which
    # crashes the process on a full disk where Python raises ENOSPC; and not into memory first, which
    # held a whole copy of the weights (ResNet-50: +98 MiB at the peak of the write)
    with open(path, "w+b") as out, h5py.File(out, "w") as f:
        _write_name_list(f, "layer_names", [name for name, _ in layers])
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = str(keras.__version__).encode("utf8")
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for name, weights in layers:
            group = f.create_group(name)
            _write_name_list(group, "weight_names", [w for w, _ in weights])
            for wname, value in weights:
                if isinstance(value, Rows):
                    value.write_into(group, wname)
                else:
                    group.create_dataset(wname, data=value() if callable(value) else value)


def write_weights_h5(model: keras.Model, path: str | os.PathLike[str], store_dtype: Any = np.float32) -> None:
    """Write ``model``'s weights in the HDF5 layout Keras' ``load_weights`` reads for a ``.h5`` path.

    Layers are listed in ``model.layers`` order (the order Keras matches them in without ``by_name``),
    each with its variables in Keras' legacy order (trainable, then non-trainable) under their paths
    (``conv1/kernel``), so the datasets sit at ``<layer>/<layer>/<weight>``. Each variable is read out
    of Keras only when its dataset is written: the model's weights are never copied all at once.
    """
    def value(w: Any) -> Callable[[], np.ndarray] | Rows:
        shape = tuple(int(d) for d in w.shape)
        sliceable = hasattr(getattr(w, "value", None), "__getitem__") and keras.backend.backend() == "tensorflow"
        if sliceable and shape and int(np.prod(shape, dtype=np.int64)) * 4 > ROWS_BYTES:
            return Rows(shape, np.dtype(store_dtype),
                        lambda a, b: np.asarray(w.value[a:b].numpy()).astype(store_dtype, copy=False))
        return lambda: np.asarray(w.numpy()).astype(store_dtype, copy=False)

    layers = []
    for layer in model.layers:
        weights = layer.trainable_weights + layer.non_trainable_weights
        layers.append((layer.name, [(w.path, value(w)) for w in weights]))
    _write_h5_layers(Path(path), layers)
