"""The model file, whichever kind it is: a Caffe net or a caffe2x ``.safetensors``.

Reading Caffe is the Caffe stage's job (:mod:`caffe2x.caffe.reader`) and reading caffe2x's own
``.safetensors`` (the graph travels in its metadata) is the safetensors target's
(:mod:`caffe2x.targets.safetensors`). Neither stage may import the other, so the choice between them
is made here, above both: ``caffe2x.load``, the CLI and the validator all read models through
:func:`read_model`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph

PathLike = str | os.PathLike[str]


def is_graph_file(model: object) -> bool:
    """A caffe2x ``.safetensors`` file (told by its suffix, as the writer names it)."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".safetensors")


def read_model(model: PathLike | None, prototxt: PathLike | None = None, input_shape: Sequence[int] | None = None,
               *, progress: bool = False, seed: int = 0, outputs: Sequence[str] | None = None,
               proto: PathLike | None = None, max_bytes: int | None = None) -> Graph:
    """A checked :class:`Graph` from a caffemodel and/or prototxt, or from a caffe2x ``.safetensors``."""
    from caffe2x.caffe import reader

    if not is_graph_file(model):
        return reader.read(model, prototxt, input_shape, progress=progress, seed=seed, outputs=outputs,
                           proto=proto, max_bytes=max_bytes)
    from caffe2x.caffe.netcut import prune_graph
    from caffe2x.targets.safetensors import read_graph

    path = reader.path_arg(model, "model")
    if prototxt is not None:
        raise Caffe2xError("a caffe2x .safetensors file carries its own graph; drop the prototxt")
    if reader.check_input_shape(input_shape) is not None:
        raise Caffe2xError("a caffe2x .safetensors file carries its own input shape; drop input_shape")
    graph = read_graph(path, max_bytes=max_bytes)  # type: ignore[arg-type]
    return prune_graph(graph, outputs) if outputs is not None else graph
