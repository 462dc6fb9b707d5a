"""Embed (BVLC): a lookup table. The input holds integer indices (stored as floats, as every Caffe
blob); output ``x.shape + (num_output,)`` with row ``weight[int(x)]`` (plus ``bias``).

Op ``Embed``, attrs ``input_dim``, ``num_output``; tensors ``weight`` (input_dim, num_output) -- Caffe's
own layout, ``nn.Embedding``'s too -- and ``bias`` (num_output) with ``bias_term``. Caffe truncates
each value to an int and requires ``0 <= index < input_dim``; the reference refuses anything else.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, expect_tensor,
                                 layer_handler, one_input, reference_op, shape_function)


@layer_handler("Embed")
def _embed(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    p = layer.embed_param
    k, n = int(p.input_dim), int(p.num_output)
    if k < 1 or n < 1:
        raise Caffe2xError(f"layer {layer.name!r} (Embed) needs input_dim and num_output >= 1")
    params = {"weight": blobs.get(0, (k, n), "he", "weight")}
    if p.bias_term:
        params["bias"] = blobs.get(1, (n,), "bias", "bias")
    return LayerSpec("Embed", {"input_dim": k, "num_output": n}, params)


@shape_function("Embed")
def _embed_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    k, n = node.attrs["input_dim"], node.attrs["num_output"]
    expect_tensor(node, graph, "weight", (k, n))
    if "bias" in node.params:
        expect_tensor(node, graph, "bias", (n,))
    return [tuple(ins[0]) + (n,)]


@reference_op("Embed")
def _embed_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    index = np.trunc(x)
    if np.any(index != x) or np.any(index < 0) or np.any(index >= node.attrs["input_dim"]):
        raise Caffe2xError(f"layer {node.name!r} (Embed): input must hold integers in 0..{node.attrs['input_dim'] - 1}")
    y = graph.param(node, "weight")[index.astype(np.int64)]
    if "bias" in node.params:
        y = y + graph.param(node, "bias")
    return [y]
