"""The torch target's read-back side for validation: ``torch.load(weights_only=True)`` and
``load_state_dict(strict=True)`` into :func:`~caffe2x.targets.torch.to_module`'s module built without
weights of its own (see :class:`TorchRunner`), and the ``.pt`` keys mapped back to graph tensor keys
by the module naming rule."""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph.ir import Graph
from caffe2x.targets import StoredTensor
from caffe2x.targets.torch.files import write
from caffe2x.targets.torch.model import CaffeNet, node_module_names, to_module


def read_state(path: Path, graph: Graph | None = None, *, mapped: bool = False) -> dict[str, torch.Tensor]:
    """A flat state_dict, read the safe way (``weights_only=True``), after the archive's declared
    sizes were checked (:func:`caffe2x.graph.bounds.check_zip_archive`: against ``graph``'s tensors when given).

    ``mapped``: the tensors are maps of the file (``torch.load(mmap=True)``, private copy-on-write,
    POSIX only) instead of copies read into memory; an archive torch cannot map (the legacy format) is
    read the ordinary way."""
    from caffe2x.graph.bounds import check_zip_archive, graph_bytes

    check_zip_archive(path, graph_bytes(graph) if graph is not None else None)
    try:
        state = _load(path, mapped and os.name == "posix")
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise Caffe2xError(f"{Path(path).name} does not load with torch.load(weights_only=True): "
                           f"{one_line(exc)}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Caffe2xError(f"{Path(path).name} is not a flat state_dict of tensors")
    check_claimed_sizes(Path(path), state, graph)
    return dict(state)


def check_claimed_sizes(path: Path, state: Mapping[str, torch.Tensor], graph: Graph | None) -> None:
    """Every tensor's claimed size (shape x itemsize, not its storage) within the artifact's budget.

    A tensor is a view of its storage: one float with stride 0 can claim 2**40 elements in a 23 KB file,
    and ``torch.load`` builds that view without allocating. The first copy (``.numpy()`` math,
    ``.contiguous()``, a comparison) would allocate 4 TiB; so the shapes are judged right after loading,
    while every tensor is still a view of the file, and an over-budget one names itself."""
    from caffe2x.graph.bounds import budget, graph_bytes
    from caffe2x.graph.checks import SizeLimitError, human

    cap = budget(graph_bytes(graph) if graph is not None else None)
    total = 0
    for key, tensor in state.items():
        claimed = tensor.numel() * tensor.element_size()
        total += claimed
        if total > cap:
            held = tensor.untyped_storage().nbytes()
            raise SizeLimitError(f"{path.name}: tensor {key!r} claims shape {list(tensor.shape)} ({tensor.numel():,} "
                                 f"{str(tensor.dtype).removeprefix('torch.')} values, {human(claimed)}) from "
                                 f"{human(held)} of storage; with the tensors before it that is over the "
                                 f"{human(cap)} this artifact may hold")


def _load(path: Path, mapped: bool) -> Any:
    if mapped:
        try:
            return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError):
            pass  # not mappable (or broken): the ordinary read says which
    return torch.load(path, weights_only=True, map_location="cpu")


#: intra-op threads while a runner computes (``CAFFE2X_TORCH_THREADS``, default 1). A runner checks
#: numbers, one photo at a time, and torch's OpenMP threads spin-wait for each other: on a 2-core machine
#: shared with other work (load ~2), ResNet-50 on 4 photos one at a time took 4.0 s with 2 threads and
#: 0.8 s with one (as a batch of 4: 1.4 s and 0.7 s). The caller's own setting is restored afterwards.
_THREADS_ENV = os.environ.get("CAFFE2X_TORCH_THREADS", "")
RUN_THREADS = int(_THREADS_ENV) if _THREADS_ENV.isdigit() and int(_THREADS_ENV) > 0 else 1


class TorchRunner:
    """The state_dict of one ``.pt`` loaded into ``to_module(graph, values)`` (one module kept at a
    time).

    The module is built without any weights of its own: its parameters start as views of the graph's
    arrays (no copy) and are then moved to the ``meta`` device, which keeps shapes and drops every
    value (stronger than zeroing them: there is no number left to forget). ``load_state_dict(strict=True,
    assign=True)`` then makes the file's tensors (mapped, see :func:`read_state`) the module's
    parameters, floating-point ones as float32; a parameter or buffer the file did not provide stays
    ``meta`` and is an error. So every number the module computes with comes from the file, and the
    weights are neither copied from the graph nor copied out of the file's pages."""

    def __init__(self, graph: Graph, state: dict[str, torch.Tensor]) -> None:
        self.graph = graph
        self.state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        self._modules: dict[tuple[str, ...], CaffeNet] = {}

    def module(self, values: Sequence[str]) -> CaffeNet:
        key = tuple(values)
        if key not in self._modules:
            module = to_module(self.graph, list(values), share_memory=True).to("meta")
            try:
                module.load_state_dict(self.state, strict=True, assign=True)
            except RuntimeError as exc:
                raise Caffe2xError(f"load_state_dict(strict=True) failed: {one_line(exc)}") from None
            empty = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
            if empty:
                raise Caffe2xError(f"load_state_dict(strict=True) left {empty[0]!r} without a value")
            self._modules = {key: module.eval()}
        return self._modules[key]

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        values = list(values)
        module = self.module(values)
        threads = torch.get_num_threads()
        torch.set_num_threads(RUN_THREADS)
        try:
            with torch.inference_mode():
                y: Any = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        finally:
            torch.set_num_threads(threads)
        if not isinstance(y, Mapping):
            return {values[0]: y.float().numpy()}
        return {k: v.float().numpy() for k, v in y.items()}


def load(path: Path, graph: Graph) -> TorchRunner:
    return TorchRunner(graph, read_state(path, graph, mapped=True))


def stored_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """Floating-point tensors of a ``.pt``, keyed by graph tensor key (``<module>.<role>`` mapped back)."""
    labels = {f"{module}.{role}": key for node, module in zip(graph.nodes, node_module_names(graph))
              for role, key in node.params.items()}
    return {labels.get(k, k): StoredTensor(k, v.detach().float().numpy())
            for k, v in read_state(path, graph).items() if v.is_floating_point()}


def load_profile(path: Path, graph: Graph, profile: str) -> Any:
    """A ``--profile torchvision`` file in torchvision's architecture (:mod:`.profile_files`)."""
    from caffe2x.targets.torch.profile_files import profile_runner

    return profile_runner(read_state(path, graph), graph, profile, Path(path).name)


__all__ = ["write", "load", "stored_tensors", "read_state", "load_profile", "TorchRunner"]
