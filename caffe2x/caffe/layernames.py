"""Layers that share a name (HED's two ``crop`` layers): Caffe's rule, and unique names for the graph.

Caffe allows two layers of a net to have the same name. ``Net::CopyTrainedLayersFrom`` copies each
layer of the caffemodel into the *first* layer of the net with that name (a linear search from the
start), so a later layer of the same name never receives trained blobs, and when the caffemodel itself
has several layers of one name, each copy overwrites the previous: the first net layer ends with the
last one's blobs (which is what caffe2x's blob index by name holds, the last entry winning).

Every target needs unique names (module attributes, Keras layers, ONNX nodes, tensor keys), so the
later layers are renamed ``<name>_2``, ``<name>_3``, ... (skipping names the net already uses) and
caffe2x warns once, naming them. A renamed layer gets no trained blobs, as in Caffe: if it needs any, that
is an error (Caffe would run it with its filler's random initial values).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from caffe2x.errors import DuplicateLayerNameWarning


def unique_names(layers: Sequence[Any]) -> dict[int, str]:
    """``id(layer) -> new name`` for every layer after the first of its name."""
    taken = {str(l.name) for l in layers}
    seen: set[str] = set()
    renamed: dict[int, str] = {}
    for l in layers:
        name = str(l.name)
        if name not in seen:
            seen.add(name)
            continue
        i = 2
        while f"{name}_{i}" in taken:
            i += 1
        renamed[id(l)] = f"{name}_{i}"
        taken.add(renamed[id(l)])
    return renamed


@contextmanager
def renamed_duplicates(layers: Sequence[Any]) -> Iterator[dict[str, str]]:
    """Within the block, the later layers of a shared name carry unique names (restored afterwards);
    yields ``new name -> original name``, and warns once when there are any."""
    renamed = unique_names(layers)
    originals: dict[int, str] = {}
    by_id = {id(l): l for l in layers}
    if renamed:
        pairs = ", ".join(f"{by_id[i].name!r} -> {new!r}" for i, new in renamed.items())
        warnings.warn(f"the net names several layers alike (Caffe allows it: the caffemodel's blobs go to the "
                      f"first layer of the name); the later ones are renamed: {pairs}",
                      DuplicateLayerNameWarning, stacklevel=4)
    try:
        for i, new in renamed.items():
            originals[i] = str(by_id[i].name)
            by_id[i].name = new
        yield {new: originals[i] for i, new in renamed.items()}
    finally:
        for i, old in originals.items():
            by_id[i].name = old


__all__ = ["unique_names", "renamed_duplicates"]
