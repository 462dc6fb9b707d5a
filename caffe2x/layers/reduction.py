"""Layers that reduce axes: Reduction (SUM, ASUM, SUMSQ, MEAN over every axis from ``axis``, times
``coeff``) and ArgMax (``top_k`` indices, optionally with their values, along ``axis`` or over each
sample).

=========  ====================================  ===================================================
op         attrs                                 y
=========  ====================================  ===================================================
Reduction  operation ('sum' | 'asum' | 'sumsq'   ``coeff * reduce(x over axes axis..)``, shape
           | 'mean'), axis, coeff                ``x.shape[:axis]`` (``axis`` 0: one scalar); MEAN
                                                 is the SUM times ``coeff / count``
ArgMax     top_k, out_max_val, axis (None: over  with ``axis``: the ``top_k`` largest along it, as
           each sample's C*H*W values)           indices, or values when ``out_max_val``; without:
                                                 shape (N, 1 or 2, top_k[, 1…]) holding the indices
                                                 and, with ``out_max_val``, the values after them
=========  ====================================  ===================================================

ArgMax orders equal values by the larger index first (Caffe's ``std::partial_sort`` with
``std::greater`` on (value, index) pairs); indices are written as float32, as Caffe does.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, layer_handler,
                                 normalize_axis, one_input, reference_op, shape_function)

_OPERATIONS = {1: "sum", 2: "asum", 3: "sumsq", 4: "mean"}  # ReductionParameter.ReductionOp


@layer_handler("Reduction")
def _reduction(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    p = layer.reduction_param
    return LayerSpec("Reduction", {"operation": _OPERATIONS[int(p.operation)],
                                   "axis": normalize_axis(p.axis, len(x), layer.name), "coeff": float(p.coeff)})


@shape_function("Reduction")
def _reduction_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [tuple(ins[0][:node.attrs["axis"]])]


@reference_op("Reduction")
def _reduction_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    flat = x.reshape(x.shape[:a["axis"]] + (-1,)).astype(np.float64)
    op = a["operation"]
    if op == "asum":
        flat = np.abs(flat)
    elif op == "sumsq":
        flat = flat * flat
    coeff = a["coeff"] / flat.shape[-1] if op == "mean" else a["coeff"]
    return [(flat.sum(axis=-1) * np.float32(coeff)).astype(np.float32)]


@layer_handler("ArgMax")
def _argmax(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    p = layer.argmax_param
    axis = normalize_axis(p.axis, len(x), layer.name) if p.HasField("axis") else None
    limit = x[axis] if axis is not None else int(np.prod(x[1:]))
    if not 1 <= p.top_k <= limit:
        raise Caffe2xError(f"layer {layer.name!r} (ArgMax): top_k {p.top_k} must be within 1..{limit}")
    return LayerSpec("ArgMax", {"top_k": int(p.top_k), "out_max_val": bool(p.out_max_val), "axis": axis})


@shape_function("ArgMax")
def _argmax_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, a = ins[0], node.attrs
    limit = x[a["axis"]] if a["axis"] is not None else int(np.prod(x[1:]))
    if a["top_k"] > limit:  # Caffe's ArgMaxLayer::Reshape CHECK, at every size the net is run at
        raise Caffe2xError(f"layer {node.name!r} (ArgMax): top_k {a['top_k']} takes at least {a['top_k']} values "
                           f"{'along axis ' + str(a['axis']) if a['axis'] is not None else 'per sample'}, got {limit}")
    if a["axis"] is not None:
        out = list(x)
        out[a["axis"]] = a["top_k"]
        return [tuple(out)]
    out = [1] * max(len(x), 3)
    out[0], out[1], out[2] = x[0], 2 if a["out_max_val"] else 1, a["top_k"]
    return [tuple(out)]


def caffe_topk(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest along the last axis, largest first, equal values by the larger index first."""
    # stable ascending keeps equal values in index order; reversed: descending, larger index first
    idx = np.argsort(v, axis=-1, kind="stable")[..., ::-1][..., :k]
    return idx, np.take_along_axis(v, idx, axis=-1)


@reference_op("ArgMax")
def _argmax_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    out_shape = graph.shapes[node.outputs[0]]
    if a["axis"] is not None:
        moved = np.moveaxis(x, a["axis"], -1)
        idx, val = caffe_topk(moved, a["top_k"])
        y = val if a["out_max_val"] else idx.astype(np.float32)
        return [np.ascontiguousarray(np.moveaxis(y, -1, a["axis"])).astype(np.float32)]
    idx, val = caffe_topk(x.reshape(x.shape[0], -1), a["top_k"])
    parts = [idx.astype(np.float32)] + ([val] if a["out_max_val"] else [])
    y = np.stack(parts, axis=1)  # (N, 1|2, top_k)
    return [y.reshape((x.shape[0],) + tuple(out_shape[1:])).astype(np.float32)]
