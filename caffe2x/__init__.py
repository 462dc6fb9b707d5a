"""caffe2x: convert Caffe models to PyTorch, Keras, safetensors and ONNX, and prove nothing changed.

The whole API is a handful of functions::

    graph = caffe2x.load("demo/resnet50.caffemodel", prototxt="demo/resnet50-deploy.prototxt")
    caffe2x.save(graph, "demo/resnet50.safetensors")      # or .pt, .h5, .keras, .onnx
    probs = caffe2x.run(graph, x)                          # numpy reference (NCHW x), the net's output
    logits = caffe2x.run(graph, x, outputs="fc1000")       # ... or any blob by name
    module = caffe2x.to_torch(graph, outputs="fc1000")     # torch.nn.Module (default output: 'prob')
    model = caffe2x.to_keras(graph, outputs="fc1000")      # keras.Model, NHWC input (same default)

README.md's Library section has a version that runs as written. Heavy frameworks are imported only by the functions that need them.
"""
from __future__ import annotations

# first: in the caffe2x command's own process, a Ctrl-C during the imports below is held for main()
from caffe2x._command import hold_from_start as _hold_from_start

_hold_from_start()

import contextlib  # noqa: E402
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2x._command import numpy_imported as _numpy_imported

_numpy_imported()

from caffe2x._version import __version__  # noqa: E402
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.registry import Registry as _Registry

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import torch

    from caffe2x.graph.ir import Graph, Node

__all__ = ["__version__", "Caffe2xError", "UnsupportedLayerError", "Graph", "Node", "load", "save", "run",
           "to_torch", "to_keras", "validate", "evaluate", "register_layer"]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def _out_of_memory_is_an_error(doing: str) -> Iterator[None]:
    """The machine had less memory than the size limit allows: say so as a Caffe2xError."""
    try:
        yield
    except MemoryError:
        from caffe2x.graph.checks import MAX_BYTES_ENV, SizeLimitError

        raise SizeLimitError(f"out of memory {doing}; lower {MAX_BYTES_ENV} (or max_bytes=) to what this "
                             f"machine has, so oversized nets are refused up front") from None


def load(model: PathLike | None = None, prototxt: PathLike | None = None,
         input_shape: Sequence[int] | None = None, *, progress: bool = False,
         outputs: str | Sequence[str] | None = None, proto: PathLike | None = None,
         max_bytes: int | None = None) -> Graph:
    """Read a ``.caffemodel`` (with an optional deploy prototxt), a caffe2x ``.safetensors``, or a
    prototxt alone (``model=None``: a weightless net with seeded random tensors) into a :class:`Graph`.

    ``outputs`` (blob names) cuts the net to what those blobs need, e.g. a backbone without its head or
    the convolutional part of a net whose later Python layer cannot be converted.

    ``proto``: the fork's own ``caffe.proto`` when the model comes from a Caffe fork caffe2x's schema
    does not know (compiled at run time with grpcio-tools; ``docs/forks.md``).

    Every graph is checked (:mod:`caffe2x.graph.checks`) before it is returned; ``max_bytes`` (default
    ``$CAFFE2X_MAX_BYTES`` or 4 GiB) bounds what building it and one forward pass may allocate.
    """
    from caffe2x.loading import read_model

    if isinstance(outputs, str):
        outputs = [o for o in outputs.split(",") if o]
    with _out_of_memory_is_an_error("reading the model"):
        return read_model(model, prototxt, input_shape, progress=progress, outputs=outputs, proto=proto,
                    max_bytes=max_bytes)


def save(graph: Graph, path: PathLike, to: str | None = None, *, dtype: str = "float32",
         profile: str | None = None, fold_bn: bool = False, overwrite: bool = False, **extra: Any) -> list[str]:
    """Write ``graph`` to ``path`` in the format named by ``to`` or by the suffix of ``path``.

    The file appears atomically (written under a temporary name, then renamed once everything that
    can fail has run). An existing different file at ``path`` is kept and the call fails unless
    ``overwrite=True``. Returns notes for the user, such as the measured logit change of a reduced
    ``dtype`` or a naming profile.
    """
    from caffe2x.convert import write

    with _out_of_memory_is_an_error(f"writing {path}"):
        return write(graph, path, to, dtype=dtype, profile=profile, fold_bn=fold_bn, overwrite=overwrite, **extra)


def run(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray],
        outputs: str | Sequence[str] | None = None, *, max_bytes: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Run the numpy reference executor (NCHW input); see :func:`caffe2x.graph.reference.run`.

    A forward pass that would allocate more than ``max_bytes`` (default ``$CAFFE2X_MAX_BYTES`` or
    4 GiB) is refused before it starts."""
    from caffe2x.graph.reference import run as _run

    with _out_of_memory_is_an_error("running the net"):
        return _run(graph, x, outputs, max_bytes=max_bytes)


def to_torch(graph: Graph, outputs: str | Sequence[str] | None = None, *, share_memory: bool = False,
             trainable: bool = False) -> "torch.nn.Module":
    """A ``torch.nn.Module`` computing the graph with Caffe's semantics (NCHW input), in ``eval()`` mode; it
    owns a copy of the weights unless ``share_memory`` (see :func:`caffe2x.targets.torch.to_module`).

    ``trainable=True``: BatchNorm uses batch statistics and updates its running ones in ``train()`` mode
    (momentum ``1 - moving_average_fraction``); eval mode is unchanged (see ``caffe2x.targets.torch.trainable``).
    """
    from caffe2x.targets.torch import to_module

    if trainable and share_memory:
        raise Caffe2xError("trainable=True updates the weights, so it needs its own copy: drop share_memory")
    module = to_module(graph, outputs, share_memory=share_memory)
    if trainable:
        from caffe2x.targets.torch import make_trainable

        make_trainable(module, graph)
    return module


def to_keras(graph: Graph, outputs: str | Sequence[str] | None = None, *, trainable: bool = False) -> "keras.Model":
    """A functional ``keras.Model`` computing the graph with Caffe's semantics (NHWC input).

    ``trainable=True``: BatchNormalization momentum becomes Caffe's ``moving_average_fraction`` (see
    ``caffe2x.targets.keras.trainable``); inference (``training=False``) is unchanged.
    """
    from caffe2x.targets.keras import to_model

    model = to_model(graph, outputs)
    if trainable:
        from caffe2x.targets.keras import make_trainable

        make_trainable(model, graph)
    return model


def validate(model: PathLike, prototxt: PathLike | None = None, **kwargs: Any) -> Any:
    """Convert, reload with each framework's own loader, run and compare; see :mod:`caffe2x.validation.validator`."""
    from caffe2x.validation.validator import validate as _validate

    return _validate(model, prototxt, **kwargs)


def evaluate(model: PathLike, prototxt: PathLike | None = None, **kwargs: Any) -> Any:
    """Accuracy and agreement of every framework over a whole image set (``images=``, ``list_file=``);
    returns an :class:`~caffe2x.validation.evaluate.EvaluationReport`; see
    :func:`caffe2x.validation.evaluate.evaluate`."""
    from caffe2x.validation.evaluate import evaluate as _evaluate

    return _evaluate(model, prototxt, **kwargs)


def __getattr__(name: str) -> Any:
    """``caffe2x.Graph``, ``caffe2x.Node`` and ``caffe2x.register_layer`` import their modules when first
    asked for (PEP 562), so ``import caffe2x`` costs little more than ``import numpy``."""
    if name in ("Graph", "Node"):
        from caffe2x.graph import ir

        return getattr(ir, name)
    if name == "register_layer":
        from caffe2x.plugins import register_layer

        return register_layer
    raise AttributeError(f"module 'caffe2x' has no attribute {name!r}")


def _register_families() -> None:
    """The layer families (reader handlers, shape rules, numpy references) and the plugin loader, imported
    the first time any registry is read -- see caffe2x/layers/__init__.py and caffe2x.graph.registry."""
    from caffe2x import layers, plugins  # noqa: F401


# Before any submodule of caffe2x can be used (Python runs this package's __init__ first), so whoever
# reads caffe2x.caffe.reader.LAYERS, caffe2x.graph.ir.SHAPE_FUNCTIONS or caffe2x.graph.reference.OPS --
# by caffe2x.load, `python -m caffe2x` or importing those modules alone -- finds every family registered.
_Registry.first_use.append(_register_families)
