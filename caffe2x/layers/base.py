"""What a layer family module needs, from one place.

A family registers one reader handler per Caffe type (``@layer_handler("Power")``: Caffe layer ->
:class:`~caffe2x.caffe.reader.LayerSpec` naming the graph op, its attributes and tensors), one shape rule
per graph op (``@shape_function``) and one numpy reference per graph op (``@reference_op``). This
module only re-exports those decorators and a few checks the families share; it imports nothing that
imports the families (see :mod:`caffe2x.layers`).
"""
from __future__ import annotations

from typing import Any

from caffe2x.caffe.reader import LAYERS, BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node, Shape, normalize_axis, shape_function
from caffe2x.graph.reference import op as reference_op

__all__ = ["Caffe2xError", "UnsupportedLayerError", "Graph", "Node", "Shape", "LayerSpec", "BlobSource",
           "LAYERS", "layer_handler", "shape_function", "reference_op", "normalize_axis", "one_input",
           "inputs", "same_shape", "expect_tensor", "broadcast_shape"]


def inputs(layer: Any, ins: list[Shape], *counts: int) -> list[Shape]:
    """Check the number of bottoms of a Caffe layer (one of ``counts``)."""
    if len(ins) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes {want} input(s), got {len(ins)}")
    return ins


def one_input(layer: Any, ins: list[Shape]) -> Shape:
    return inputs(layer, ins, 1)[0]


def same_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    """Shape rule of every op whose output is shaped like its first input."""
    return [ins[0]]


def expect_tensor(node: Node, graph: Graph, role: str, shape: Shape) -> None:
    """The node's ``role`` tensor exists and has ``shape`` (a caffemodel that does not fit the net)."""
    t = graph.tensors.get(node.params.get(role, ""))
    if t is None:
        raise Caffe2xError(f"layer {node.name!r} ({node.op}) has no {role} tensor")
    if tuple(t.shape) != tuple(shape):
        raise Caffe2xError(f"layer {node.name!r} ({node.op}) {role} has shape {list(t.shape)}, expected {list(shape)}")


def broadcast_shape(x_rank: int, axis: int, p_shape: Shape) -> tuple[int, ...]:
    """Caffe's Scale/Bias broadcasting: a parameter of shape ``p_shape`` covers the input's axes
    ``axis .. axis + len(p_shape)`` and is repeated over the others; this is its shape padded with 1s
    to the input's rank."""
    return (1,) * axis + tuple(p_shape) + (1,) * (x_rank - axis - len(p_shape))
