"""Running a ``--profile keras-applications`` ``.h5`` for ``validate --against``: Keras' own
``load_weights`` into ``keras.applications.ResNet50/101/152(weights=None)`` whose variables were
zeroed first, and the profile and bound the converter recorded in the file's root attributes."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph.ir import Graph
from caffe2x.targets import RecordedProfile
from caffe2x.targets.keras.profiles import (BOUND_ATTR, PROFILE_ATTR, _keras_application, _resnet_units,
                                            measure_input)

PROFILE = "keras-applications"


def recorded_profile(path: Path) -> RecordedProfile | None:
    """The profile and measured bound in a ``.h5``'s root attributes (None: a plain file, or a
    ``.keras``, which caffe2x never writes with a profile)."""
    if Path(path).suffix.lower() != ".h5":
        return None
    try:
        with h5py.File(path, "r") as f:
            name, bound = f.attrs.get(PROFILE_ATTR), f.attrs.get(BOUND_ATTR)
    except OSError as exc:
        raise Caffe2xError(f"{Path(path).name} is not an HDF5 file: {one_line(exc)}") from None
    if name is None:
        return None
    name = name.decode("utf8", "replace") if isinstance(name, bytes) else str(name)
    try:
        value = float(bound)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise Caffe2xError(f"{Path(path).name}: attribute {BOUND_ATTR} is {bound!r}, not a measured bound")
    return RecordedProfile(name, value)


class ApplicationsRunner:
    """keras.applications' ResNet holding the file's weights; computes the logits (``predictions``) only."""

    def __init__(self, graph: Graph, path: Path) -> None:
        arch, _, fc = _resnet_units(graph)
        self.logits = fc.outputs[0]
        self.measurement_input = measure_input(graph)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras/TF chatter is not the validator's output
            model = _keras_application(arch, graph, fc.attrs["num_output"])
            for w in model.weights:
                w.assign(np.zeros(tuple(w.shape), dtype=np.float32))  # every number must come from the file
            try:
                model.load_weights(str(path))
            except (ValueError, KeyError, OSError) as exc:
                raise Caffe2xError(f"{Path(path).name}: Keras load_weights into keras.applications.{arch} "
                                   f"failed: {one_line(exc)}") from None
        self.model = model

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        unknown = [v for v in values if v != self.logits]
        if unknown:
            raise Caffe2xError(f"the keras-applications profile's net computes only the logits {self.logits!r}, "
                               f"not {unknown[0]!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras/TF chatter is not the validator's output
            y: Any = self.model(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1)), training=False)
        return {self.logits: np.asarray(y, dtype=np.float32)}


def load_profile(path: Path, graph: Graph, profile: str) -> ApplicationsRunner:
    if profile != PROFILE:
        raise Caffe2xError(f"unknown Keras naming profile {profile!r}; the Keras target knows {PROFILE!r}")
    from caffe2x.graph.bounds import check_h5, graph_bytes

    check_h5(path, graph_bytes(graph))
    return ApplicationsRunner(graph, path)
