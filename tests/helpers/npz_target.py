"""A complete caffe2x target in one file: the graph's tensors as a NumPy ``.npz``, run by caffe2x's
numpy reference executor. docs/targets.md shows this file; the tests register it in-process and as an
entry point of a separate distribution."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph
from caffe2x.targets import StoredTensor, Target, WriteOptions


class NpzRunner:
    """The graph run by caffe2x's numpy reference with the tensors read from the file."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        from caffe2x.graph.reference import execute  # imported when used, like a framework would be

        return execute(self.graph, x, keep=set(values))


class NpzTarget(Target):
    """Tensors under the graph's own keys (``conv1.weight``), float32 or float16."""

    def write(self, graph: Graph, path: Path, options: WriteOptions) -> list[str]:
        if options.profile is not None:
            raise Caffe2xError(f"the npz target has no naming profile {options.profile!r}")
        if options.dtype not in ("float32", "float16"):
            raise Caffe2xError(f"the npz target stores float32 or float16, not {options.dtype}")
        arrays = {k: np.asarray(v, dtype=options.dtype) for k, v in graph.tensors.items()}
        with open(path, "wb") as f:  # a file object: np.savez would append .npz to a temporary name
            np.savez(f, **arrays)
        return [f"{len(arrays)} tensors; load with numpy.load(path)"]

    def load(self, path: Path, graph: Graph) -> NpzRunner:
        stored = self.stored_tensors(path, graph)
        tensors = {k: np.zeros_like(v) for k, v in graph.tensors.items()}  # every number from the file
        for key in tensors:
            if key not in stored:
                raise Caffe2xError(f"{Path(path).name} has no tensor {key!r}")
            tensors[key] = stored[key].array
        return NpzRunner(graph.copy(tensors=tensors))

    def stored_tensors(self, path: Path, graph: Graph) -> dict[str, StoredTensor]:
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: StoredTensor(k, np.asarray(data[k], dtype=np.float32)) for k in data.files}
        except (OSError, ValueError) as exc:
            raise Caffe2xError(f"{Path(path).name} is not an .npz file: {exc}") from None


TARGET = NpzTarget(name="npz", suffixes=(".npz",), requires=("numpy",), summary="NumPy .npz, numpy reference")
