"""The Keras target's read-back side for validation: Keras' own ``load_weights`` on the ``.h5`` into
:func:`~caffe2x.targets.keras.to_model`'s model, weights zeroed first; NHWC in and out, transposed back
to Caffe's NCHW. The ``.h5`` names (``<layer>/<layer>/<variable>``) are mapped back to graph tensor
keys here, beside the code that invents them (:class:`~caffe2x.targets.keras.ops.BuildContext`)."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from caffe2x.errors import Caffe2xError, one_line
from caffe2x.graph.ir import Graph
from caffe2x.targets import StoredTensor
from caffe2x.targets.keras.files import write
from caffe2x.targets.keras.model import take, to_model
from caffe2x.targets.keras.ops import BuildContext, assign_in_slices
from caffe2x.targets.keras.profile_files import load_profile, recorded_profile

#: Keras variable name -> graph param role, per op (the variables the builders in ops.py create)
KERAS_ROLES: dict[str, dict[str, str]] = {
    "Convolution": {"kernel": "weight", "bias": "bias"},
    "InnerProduct": {"kernel": "weight", "bias": "bias"},
    "BatchNorm": {"moving_mean": "running_mean", "moving_variance": "running_var"},
    "Scale": {"scale": "weight", "bias": "bias"},
}


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Keras/TF chatter (retracing warnings, numpy notices) is not the validator's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _zeroed(model: keras.Model) -> keras.Model:
    for w in model.weights:  # every number must come from the file
        assign_in_slices(w, np.zeros(tuple(w.shape), dtype=np.float32))
    return model


def _copy_by_name(model: keras.Model, path: Path) -> None:
    """A ``.keras`` file's weights into ``model`` by layer name: the file's own model is loaded
    (``keras.models.load_model``, safe mode; this package registers the caffe2x layers) and each layer
    of ``model`` holding weights takes the values of the file's layer of that name. (The file stores
    weights under generated per-class names, so Keras cannot load it into a different model.)"""
    whole = keras.models.load_model(str(path), compile=False)
    names = {layer.name for layer in whole.layers}
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in names]
    if missing:
        raise Caffe2xError(f"{path.name} has no weights for layer {missing[0]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(whole.get_layer(layer.name).get_weights())


def load_weights(model: keras.Model, path: str | Path) -> None:
    """``model.load_weights(path)`` that also fills a sub-model (``to_keras(graph, outputs=one_head)``)
    from a file written for the whole net: a legacy ``.h5`` is loaded by layer name (Keras'
    ``by_name=True``), after checking that the file has every layer of the model that holds weights,
    so no layer is silently left with its initial values; a ``.keras`` file likewise by layer name
    (:func:`_copy_by_name`). A ``.weights.h5`` loads as Keras loads it."""
    p = Path(path)
    if p.suffix.lower() == ".keras":
        _copy_by_name(model, p)
        return
    if p.suffix.lower() != ".h5" or p.name.lower().endswith(".weights.h5"):
        model.load_weights(str(p))
        return
    try:
        with h5py.File(p, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            saved = set(_h5_names(root.attrs, "layer_names") or [])
    except OSError as exc:
        raise Caffe2xError(f"{p.name} is not an HDF5 file: {one_line(exc)}") from None
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in saved]
    if missing:
        raise Caffe2xError(f"{p.name} has no weights for layer {missing[0]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    model.load_weights(str(p), by_name=True)


class KerasRunner:
    """``to_model(graph, values)`` with zeroed weights, then the file's weights (one model kept).

    A net with several outputs compared one at a time needs a sub-model of the net, loaded by layer
    name (:func:`load_weights`)."""

    def __init__(self, graph: Graph, path: Path) -> None:
        self.graph = graph
        self.path = Path(path)
        self._models: dict[tuple[str, ...], keras.Model] = {}
        self._calls: dict[tuple[str, ...], Any] = {}

    def model(self, values: Sequence[str]) -> keras.Model:
        key = tuple(values)
        if key not in self._models:
            with quiet_tensorflow():
                model = _zeroed(self._build(list(values)))
                try:
                    if list(values) == list(self.graph.outputs) and self.path.suffix.lower() == ".keras":
                        model.load_weights(str(self.path))  # the very model the file was saved from
                    else:
                        load_weights(model, self.path)
                except (ValueError, KeyError, OSError) as exc:
                    raise Caffe2xError(f"Keras load_weights failed: {one_line(exc)}") from None
            self._models = {key: model}
            self._calls = {key: _graph_call(model)}
        return self._models[key]

    def _build(self, values: list[str]) -> keras.Model:
        """The model for ``values``: cut from the net the write of this graph just built when there
        is one (:func:`~.model.take`; the caller zeroes every weight before loading, as for a fresh
        build, so every number still comes from the file), else built afresh."""
        built = take(self.graph)
        if built is None:
            return to_model(self.graph, values)
        net, written = built
        if [self.graph.value(v) for v in values] == list(self.graph.outputs):
            return written  # the very model the file was saved from (Keras' native loader wants it)
        return net.model(self.graph, values)

    def run(self, x: np.ndarray, values: Sequence[str]) -> dict[str, np.ndarray]:
        values = list(values)
        self.model(values)
        call = self._calls[tuple(values)]
        x_nhwc = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)) if x.ndim == 4 else x
        with quiet_tensorflow(), _graph_as_traced():
            y: Any = call(x_nhwc)
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        result = {}
        for name, t in zip(values, ys):
            arr = np.asarray(t, dtype=np.float32)
            if len(self.graph.shapes[self.graph.value(name)]) == 4:
                arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
            result[name] = arr
        return result


def _graph_call(model: keras.Model) -> Any:
    """``model(x, training=False)``, as a ``tf.function`` on the TensorFlow backend.

    Why: Keras' eager functional call keeps every layer's output until the call returns (ResNet-50, one
    photo: +160 MiB resident in the validation child, which the allocator then kept); TensorFlow's graph
    executor frees each tensor after its last use (+30 MiB), and runs a photo in a sixth of the time
    once traced. Run under :func:`_graph_as_traced`, the graph runs exactly the eager call's kernels, so
    the numbers are bit-identical (tests/targets/test_keras_target.py). Other backends call eagerly."""
    if keras.backend.backend() != "tensorflow":
        return lambda x: model(x, training=False)
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


@contextlib.contextmanager
def _graph_as_traced() -> Iterator[None]:
    """Grappler's graph rewrites off while the block runs a function (TensorFlow optimises a function's
    graph when it first runs it): its fusions (Conv2D + BiasAdd + Relu into one kernel, folded
    constants) change the last bits of the results, which would no longer be what the eager Keras
    model, and a user's ``model(x)``, computes. The previous setting is restored afterwards."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    before = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


def load(path: Path, graph: Graph) -> KerasRunner:
    from caffe2x.graph.bounds import check_h5, check_zip_archive, graph_bytes

    if Path(path).suffix.lower() == ".keras":  # a zip holding an HDF5 file: its entries' declared sizes
        check_zip_archive(path, graph_bytes(graph))
    else:  # declared dataset sizes and types, before Keras reads any
        check_h5(path, graph_bytes(graph))
    return KerasRunner(graph, path)


def _h5_names(attrs: Any, name: str) -> list[str] | None:
    """A name list as Keras stores it (possibly split over name0, name1, ...)."""
    if name in attrs:
        chunks = [attrs[name]]
    elif f"{name}0" in attrs:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in chunk]


def tensor_keys(graph: Graph) -> dict[str, str]:
    """Name in the ``.h5`` (``<layer>/<layer>/<variable>``) -> graph tensor key."""
    ctx = BuildContext(graph)
    labels = {}
    for node in graph.nodes:
        layer = ctx.name(node)
        for var, role in KERAS_ROLES.get(node.op, {}).items():
            if role in node.params:
                labels[f"{layer}/{layer}/{var}"] = node.params[role]
    return labels


def keras_file_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """Every weight of a Keras 3 native ``.keras`` file, read the way a user does: ``load_weights`` into
    ``to_model(graph)`` with zeroed variables, named as in a ``.h5`` (``<layer>/<layer>/<variable>``)."""
    labels = tensor_keys(graph)
    out = {}
    for layer in KerasRunner(graph, path).model(list(graph.outputs)).layers:
        for w in layer.weights:
            name = f"{layer.name}/{layer.name}/{w.name}"
            out[labels.get(name, name)] = StoredTensor(name, np.asarray(w.numpy(), dtype=np.float32))
    return out


def stored_tensors(path: Path, graph: Graph) -> dict[str, StoredTensor]:
    """Every weight of a Keras HDF5 file (weights or full model) or ``.keras`` file, in Keras' layout,
    by graph key.

    Sizes are checked from the file's directory first (:mod:`caffe2x.graph.bounds`: HDF5 dataset headers, the
    ``.keras`` zip's entries); names an HDF5 file lists but does not hold are an error, not a KeyError."""
    from caffe2x.graph.bounds import check_h5, check_zip_archive, graph_bytes

    if Path(path).suffix.lower() == ".keras":
        check_zip_archive(path, graph_bytes(graph))
        return keras_file_tensors(path, graph)
    check_h5(path, graph_bytes(graph))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise Caffe2xError(f"{Path(path).name} is not an HDF5 file: {one_line(exc)}") from None
    labels = tensor_keys(graph)
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = _h5_names(root.attrs, "layer_names")
        if layers is None:
            raise Caffe2xError(f"{Path(path).name} is not a Keras HDF5 weights file (no layer_names)")
        out = {}
        for layer in layers:
            if not isinstance(root.get(layer), h5py.Group):
                raise Caffe2xError(f"{Path(path).name}: layer_names lists {layer!r}, which the file does not hold")
            for wname in _h5_names(root[layer].attrs, "weight_names") or []:
                if not isinstance(root[layer].get(wname), h5py.Dataset):
                    raise Caffe2xError(f"{Path(path).name}: layer {layer!r} lists weight {wname!r}, which the file "
                                       f"does not hold")
                name = f"{layer}/{wname}"
                out[labels.get(name, name)] = StoredTensor(name, np.asarray(root[layer][wname], dtype=np.float32))
        return out


__all__ = ["write", "load", "load_weights", "stored_tensors", "load_profile", "recorded_profile", "KerasRunner",
           "KERAS_ROLES", "tensor_keys", "quiet_tensorflow"]
