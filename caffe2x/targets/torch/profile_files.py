"""Running a ``--profile torchvision`` file for ``validate --against``: the file's state_dict loaded
with ``load_state_dict(strict=True)`` into torchvision's ResNet architecture (:class:`TorchvisionResNet`,
the same keys as ``torchvision.models.resnetNN()``), so the numbers that run are the file's.

A ``.pt`` is a plain state_dict (it must keep loading into torchvision with ``strict=True``), so it
records neither its profile nor the logit difference its conversion printed: the validator asks for
``--profile torchvision`` instead and re-derives that bound from the model (:func:`recorded_profile`
is therefore absent here; see :mod:`caffe2x.validation.artifacts`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph.ir import Graph
from caffe2x.targets.torch.profiles import TorchvisionResNet, measure_input, torchvision_profile


class TorchvisionRunner:
    """torchvision's ResNet holding a profile file's tensors; computes the logits (``fc``) only."""

    def __init__(self, graph: Graph, state: Mapping[str, torch.Tensor], name: str) -> None:
        spec = torchvision_profile(graph)  # layers, classes and the logits value of this Caffe net
        self.logits = spec.logits
        self.measurement_input = measure_input(graph)
        with torch.device("meta"):  # no initial values at all: strict + assign takes every number from the file
            net = TorchvisionResNet(spec.layers, spec.num_classes)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        try:
            net.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise Caffe2xError(f"{name}: load_state_dict(strict=True) into torchvision's "
                               f"{spec.constructor} failed: {one_line(exc)}") from None
        self.net = net.eval()

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        unknown = [v for v in values if v != self.logits]
        if unknown:
            raise Caffe2xError(f"the torchvision profile's net computes only the logits {self.logits!r}, "
                               f"not {unknown[0]!r}")
        with torch.inference_mode():
            y = self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return {self.logits: y.float().numpy()}


def profile_runner(state: Mapping[str, torch.Tensor], graph: Graph, profile: str, name: str) -> TorchvisionRunner:
    if profile != "torchvision":
        raise Caffe2xError(f"unknown profile {profile!r} for the torch target (available: torchvision)")
    return TorchvisionRunner(graph, state, name)
