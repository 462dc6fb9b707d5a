"""Layers that combine a blob with a parameter or a second blob broadcast along Caffe axes:
Bias (one input with a learned blob, or two inputs), two-input Scale (SE nets), Axpy (SENet fork).

Caffe's broadcasting rule (Scale and Bias): the operand of shape ``s`` covers the input's axes
``axis .. axis + len(s)`` (``axis`` default 1; a 0-d operand means axis 0) and is repeated over every
other axis; shapes must match exactly on the covered axes.

==========  ==========================================  ==============================================
op          inputs / attrs                              y
==========  ==========================================  ==============================================
Bias        x (+ b); axis; tensor ``bias`` when one      ``x + b`` broadcast from ``axis``
            input (``bias_param``: axis, num_axes)       (``num_axes: 0``: a (1,) tensor broadcast
                                                         from the last axis, ``scalar`` set)
Multiply    x, s; axis; tensor ``bias`` when the Caffe  ``x * s (+ bias)`` broadcast from ``axis``
            Scale has ``bias_term`` (shape of s)         (Caffe's Scale with a second bottom)
Axpy        a (N, C[, 1, 1]), x, y (N, C, ...)           ``a[n, c] * x + y``
==========  ==========================================  ==============================================
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import LAYERS
from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, broadcast_shape,
                                 expect_tensor, inputs, layer_handler, normalize_axis, reference_op,
                                 shape_function)

#: the reader's handler for the one-input Scale (kept; this module adds the two-input form)
_scale_one_input = LAYERS["Scale"]


def _covered_axis(layer: Any, x: Shape, operand: Shape, axis: int) -> int:
    """Caffe's axis for a second-bottom operand, checked to fit ``x`` from there."""
    axis = 0 if len(operand) == 0 else normalize_axis(axis, len(x), layer.name)
    if tuple(x[axis:axis + len(operand)]) != tuple(operand):
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): operand shape {list(operand)} does not match "
                           f"input shape {list(x)} from axis {axis}")
    return axis


@layer_handler("Bias")
def _bias(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x, *rest = inputs(layer, ins, 1, 2)
    p = layer.bias_param
    if rest:
        return LayerSpec("Bias", {"axis": _covered_axis(layer, x, rest[0], p.axis)})
    axis = normalize_axis(p.axis, len(x), layer.name)
    if p.num_axes < -1 or (p.num_axes >= 0 and axis + p.num_axes > len(x)):
        raise Caffe2xError(f"layer {layer.name!r} (Bias): num_axes {p.num_axes} does not fit a {len(x)}-D input "
                           f"from axis {axis}")
    shape = x[axis:] if p.num_axes == -1 else x[axis:axis + p.num_axes]
    if not shape:  # num_axes 0: one scalar added everywhere, kept as a (1,) tensor
        return LayerSpec("Bias", {"axis": len(x) - 1, "scalar": True},
                         {"bias": blobs.get(0, (1,), "bias", "bias")})
    return LayerSpec("Bias", {"axis": axis}, {"bias": blobs.get(0, shape, "bias", "bias")})


@layer_handler("Scale")
def _scale(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """One input: the reader's Scale. Two inputs: ``Multiply`` by the second bottom (SE nets); with
    ``bias_term`` Caffe's bias blob is blob 0, shaped like the second bottom."""
    if len(ins) == 1:
        return _scale_one_input(layer, ins, blobs)
    x, s = inputs(layer, ins, 2)
    p = layer.scale_param
    axis = _covered_axis(layer, x, s, p.axis)
    params = {"bias": blobs.get(0, s, "bias", "bias")} if p.bias_term else {}
    return LayerSpec("Multiply", {"axis": axis}, params)


@layer_handler("Axpy")
def _axpy(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    a, x, y = inputs(layer, ins, 3)
    if tuple(x) != tuple(y) or len(x) < 2 or tuple(a[:2]) != tuple(x[:2]) or any(d != 1 for d in a[2:]) \
            or len(a) not in (2, len(x)):
        raise Caffe2xError(f"layer {layer.name!r} (Axpy) needs a (N, C[, 1, 1]), x and y alike (N, C, ...); got "
                           f"{list(a)}, {list(x)}, {list(y)}")
    return LayerSpec("Axpy")


# --------------------------------------------------------------------------- shapes
@shape_function("Bias", "Multiply")
def _broadcast_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x = ins[0]
    axis = node.attrs["axis"]
    if len(ins) == 2:
        operand = ins[1]
        if tuple(x[axis:axis + len(operand)]) != tuple(operand):
            raise Caffe2xError(f"layer {node.name!r} ({node.op}): operand {list(operand)} does not fit {list(x)} "
                               f"from axis {axis}")
        if "bias" in node.params:
            expect_tensor(node, graph, "bias", operand)
    else:
        bias = graph.tensors.get(node.params.get("bias", ""))
        if bias is None:
            raise Caffe2xError(f"layer {node.name!r} ({node.op}) has neither a second input nor a bias tensor")
        expect_tensor(node, graph, "bias", (1,) if node.attrs.get("scalar") else x[axis:axis + bias.ndim])
    return [x]


@shape_function("Axpy")
def _axpy_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [ins[1]]


# --------------------------------------------------------------------------- numpy reference
def _against(x: np.ndarray, operand: np.ndarray, axis: int) -> np.ndarray:
    return operand.reshape(broadcast_shape(x.ndim, axis, operand.shape))


@reference_op("Bias")
def _bias_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    x = ins[0]
    b = ins[1] if len(ins) == 2 else graph.param(node, "bias")
    return [x + _against(x, b, node.attrs["axis"])]


@reference_op("Multiply")
def _multiply_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    x, s = ins
    axis = node.attrs["axis"]
    y = x * _against(x, s, axis)
    if "bias" in node.params:
        y = y + _against(x, graph.param(node, "bias"), axis)
    return [y]


@reference_op("Axpy")
def _axpy_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    a, x, y = ins
    return [a.reshape(a.shape[:2] + (1,) * (x.ndim - 2)) * x + y]
