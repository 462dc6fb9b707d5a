"""The graph as a functional ``keras.Model`` (:func:`to_model`), built op by op from :data:`~.ops.OPS`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ...ir import Graph
from ...reference import resolve_outputs
from .ops import OPS, BuildContext, keras_name


def to_model(graph: Graph, outputs: str | Sequence[str] | None = None) -> keras.Model:
    """A functional Keras model computing ``graph`` with Caffe's semantics; 4-D inputs/outputs are NHWC.

    ``outputs`` names Caffe blobs (their final values, as pycaffe shows them); default: the net's
    outputs. One output gives a single-output model, several a list in the order given.
    """
    ctx = BuildContext(graph)
    tensors: dict[str, Any] = {}
    inputs = []
    for blob, shape in graph.inputs.items():
        per_sample = (shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape[1:])
        t = keras.Input(shape=per_sample, name=ctx.input_name(blob))
        tensors[blob] = t
        inputs.append(t)
    for node in graph.nodes:
        outs = OPS.lookup(node.op, node.name)(ctx, node, [tensors[v] for v in node.inputs])
        for value, t in zip(node.outputs, outs):
            tensors[value] = t
    names = resolve_outputs(graph, outputs)
    outs = [tensors[graph.value(n)] for n in names]
    return keras.Model(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outs[0] if len(outs) == 1 else outs,
                       name=keras_name(graph.name or "caffe2x"))

