"""The ``numpy`` target: caffe2x's numpy reference executor (:mod:`caffe2x.graph.reference`, Caffe's exact
numbers) as a target like the others.

Its file is a ``.safetensors`` written by the ``safetensors`` target (so it writes nothing itself):
:func:`load` reads the graph back from the file's metadata with safetensors' own ``deserialize`` and
runs it; a plain safetensors state dict (no graph) runs with the validated graph's structure and the
file's tensors.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.graph.reference import execute
from caffe2x.targets import StoredTensor
from caffe2x.targets.safetensors import read_graph, read_tensors


@dataclass
class ReferenceRunner:
    """Runs a graph with the numpy reference executor."""

    graph: Graph
    #: whether :attr:`graph` is bit-identical to the graph being validated
    identical: bool = False
    _reference: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = field(default=None, repr=False)

    def use_reference(self, x: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """The validation's batch and the reference's values for it (value name -> array)."""
        self._reference = (x, values)

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        """The reference on the graph read back from the file. When that graph is bit-identical to the
        validated one and ``x`` is the validation's batch, the executor (deterministic) would repeat the
        reference run exactly, so its values are returned instead of running it a second time."""
        ref = self._reference
        if ref is not None and self.identical and x is ref[0] and all(v in ref[1] for v in values):
            return {v: ref[1][v] for v in values}
        return execute(self.graph, x, keep=set(values))


def _complete(graph: Graph, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in graph.tensors if k not in tensors]
    if missing:
        raise Caffe2xError(f"the file has no tensor {missing[0]!r}")
    return {k: np.asarray(tensors[k], dtype=np.float32) for k in graph.tensors}


def load(path: Path, graph: Graph) -> ReferenceRunner:
    try:
        stored = read_graph(path)
    except Caffe2xError:  # a plain state dict (no graph metadata): the graph with the file's tensors
        stored = graph.copy(tensors=_complete(graph, read_tensors(path)))
    return ReferenceRunner(stored, identical=stored.equals(graph))


def stored_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """safetensors keeps the graph's tensor keys as they are."""
    return {k: StoredTensor(k, v) for k, v in read_tensors(path).items()}
