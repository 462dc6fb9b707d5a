"""Caffe's HDF5 weights (``.caffemodel.h5``, written with ``snapshot_format: HDF5``).

Caffe's ``Net::ToHDF5`` writes a group ``data`` holding one group per layer that has parameters,
named after the layer, and in it one dataset per blob named by its index (``"0"``, ``"1"``, ...), in
the blob's own shape. Training snapshots add a ``diff`` group, which is ignored here. The file holds
no net definition, so, as with Caffe's ``CopyTrainedLayersFromHDF5``, the deploy prototxt defines the
net and the layers take their blobs by name. The blobs then go through the same checks and into the
same graph as a protobuf ``.caffemodel``'s. Layer names containing ``/`` (GoogLeNet's
``inception_3a/1x1``) are HDF5 paths, which nested groups also resolve.

h5py is imported only when such a file is read (``pip install 'caffe2x[hdf5]'``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError


@dataclass
class H5Layer:
    """One layer's blobs from the file, shaped like the ``LayerParameter`` fields the reader uses."""

    name: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class H5Net:
    """The weights of an HDF5 caffemodel as a net of :class:`H5Layer` (the reader's ``weights_net``)."""

    layer: list[H5Layer]


def _blob_index(name: str, layer: str, source: str) -> int:
    if not name.isdigit():
        raise Caffe2xError(f"{source}: layer {layer!r} holds a dataset {name!r}; Caffe names blobs 0, 1, ...")
    return int(name)


def read_hdf5_weights(path: str | Path, names: list[str] | None = None) -> H5Net:
    """The blobs of every layer in ``path`` (``names``: only these layers; others in the file are left
    unread, so a large file is read only as far as the net needs)."""
    try:
        import h5py
    except ImportError:
        raise Caffe2xError(f"{path} is an HDF5 caffemodel; reading it needs h5py: pip install 'caffe2x[hdf5]'") from None
    source = str(path)
    from caffe2x.graph.bounds import check_h5

    check_h5(path)  # declared dataset sizes (within CAFFE2X_MAX_BYTES) and numeric types, before reading any
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise Caffe2xError(f"cannot read {source} as HDF5: {exc}") from None
    with f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise Caffe2xError(f"{source} is HDF5 but not Caffe weights (no 'data' group)")
        layers: list[H5Layer] = []
        wanted = names if names is not None else _layer_groups(data)
        for name in wanted:
            group = data.get(name)
            if not isinstance(group, h5py.Group):
                continue
            datasets = [(k, v) for k, v in group.items() if isinstance(v, h5py.Dataset)]
            blobs = sorted(((_blob_index(k, name, source), v) for k, v in datasets), key=lambda kv: kv[0])
            if [i for i, _ in blobs] != list(range(len(blobs))):
                raise Caffe2xError(f"{source}: layer {name!r} has blobs {[i for i, _ in blobs]}, not 0..{len(blobs) - 1}")
            layers.append(H5Layer(name, [np.asarray(ds[()], dtype=np.float32) for _, ds in blobs]))
    return H5Net(layers)


def _layer_groups(data: Any) -> list[str]:
    """Every group under ``data`` that holds datasets, by its path relative to ``data``."""
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and any(isinstance(v, h5py.Dataset) for v in obj.values()):
            found.append(name)

    data.visititems(visit)
    return found
