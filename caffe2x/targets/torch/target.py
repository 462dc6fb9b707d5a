"""The torch target's read-back side for validation: ``torch.load(weights_only=True)`` and
``load_state_dict(strict=True)`` into :func:`~caffe2x.targets.torch.to_module`'s module, weights
zeroed first, and the ``.pt`` keys mapped back to graph tensor keys by the module naming rule."""
from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import Caffe2xError, one_line
from ...ir import Graph
from .. import StoredTensor
from .files import write
from .model import CaffeNet, node_module_names, to_module


def read_state(path: Path, graph: Graph | None = None) -> dict[str, torch.Tensor]:
    """A flat state_dict, read the safe way (``weights_only=True``), after the archive's declared
    sizes were checked (:func:`caffe2x.bounds.check_zip_archive`: against ``graph``'s tensors when given)."""
    from ...bounds import check_zip_archive, graph_bytes

    check_zip_archive(path, graph_bytes(graph) if graph is not None else None)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise Caffe2xError(f"{Path(path).name} does not load with torch.load(weights_only=True): "
                           f"{one_line(exc)}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Caffe2xError(f"{Path(path).name} is not a flat state_dict of tensors")
    return dict(state)


class TorchRunner:
    """The state_dict of one ``.pt`` loaded into ``to_module(graph, values)`` (one module kept at a
    time: a module holds a full copy of the weights)."""

    def __init__(self, graph: Graph, state: dict[str, torch.Tensor]) -> None:
        self.graph = graph
        self.state = state
        self._modules: dict[tuple[str, ...], CaffeNet] = {}

    def module(self, values: Sequence[str]) -> CaffeNet:
        key = tuple(values)
        if key not in self._modules:
            module = to_module(self.graph, list(values))
            with torch.no_grad():
                for t in module.state_dict().values():
                    t.zero_()  # every number must come from the file
            try:
                module.load_state_dict(self.state, strict=True)
            except RuntimeError as exc:
                raise Caffe2xError(f"load_state_dict(strict=True) failed: {one_line(exc)}") from None
            self._modules = {key: module.eval()}
        return self._modules[key]

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        values = list(values)
        module = self.module(values)
        with torch.inference_mode():
            y: Any = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if not isinstance(y, Mapping):
            return {values[0]: y.float().numpy()}
        return {k: v.float().numpy() for k, v in y.items()}


def load(path: Path, graph: Graph) -> TorchRunner:
    return TorchRunner(graph, read_state(path, graph))


def stored_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """Floating-point tensors of a ``.pt``, keyed by graph tensor key (``<module>.<role>`` mapped back)."""
    labels = {f"{module}.{role}": key for node, module in zip(graph.nodes, node_module_names(graph))
              for role, key in node.params.items()}
    return {labels.get(k, k): StoredTensor(k, v.detach().float().numpy())
            for k, v in read_state(path, graph).items() if v.is_floating_point()}


def load_profile(path: Path, graph: Graph, profile: str) -> Any:
    """A ``--profile torchvision`` file in torchvision's architecture (:mod:`.profile_files`)."""
    from .profile_files import profile_runner

    return profile_runner(read_state(path, graph), graph, profile, Path(path).name)


__all__ = ["write", "load", "stored_tensors", "read_state", "load_profile", "TorchRunner"]
