"""Symbolic input sizes in the ONNX model: which ops follow a size only known at run time, and the
run-time forms of the two that compute with sizes (Caffe's ceil-mode pooling, Crop).

:func:`plan` picks the input axes to make symbolic (:func:`caffe2x.graph.reshape.symbolic_axes`: the free
ones, when every layer on a value whose shape varies is emitted without a baked-in size). The
converters of Pooling and Crop ask :meth:`~.ops.Builder.varies` and, for a varying input, compute
Caffe's geometry from ``Shape`` with int64 arithmetic in the graph instead of from constants:

* Pooling: ``out = ceil((size + 2p - k) / s) + 1``, less one when the last window would start at or
  past ``size + p`` (only with ``p > 0``), as Caffe's ``PoolingLayer::Reshape``; the right padding
  ``max(0, (out - 1) s + k - size - p)`` after which exactly ``out`` windows fit goes into a ``Pad``.
  AVE divides each window sum by Caffe's clipped divisor, an ``AveragePool`` of a ones plane padded
  with ones inside ``size + p`` and zeros beyond.
* Crop: ``Slice`` ends are the reference's run-time shape plus the offsets.

Interp and PriorBox compute their sizes in the graph too (:mod:`.dynamic_layers`), a Reshape and a
Flatten take the input's run-time dims around the replaced ones, DetectionOutput counts its priors
from the run-time shapes. Everything else on a varying value only uses attributes (kernels, strides,
pads, channel counts).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto, helper

from caffe2x.graph.formulas import prior_follows_input
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.reshape import axis_name, symbolic_axes

if TYPE_CHECKING:  # the converters in .ops call this module
    from caffe2x.targets.onnx.ops import Builder

#: ops whose converter never reads a size that can vary: only attributes and channel counts
_AGNOSTIC = {"Convolution", "Deconvolution", "BatchNorm", "Scale", "ReLU", "ELU", "PReLU", "Sigmoid", "TanH",
             "Dropout", "Softmax", "LRN", "Concat", "Eltwise", "AbsVal", "BNLL", "Exp", "Log", "Threshold",
             "Clip", "Swish", "Power", "UpsampleNearest", "Normalize", "Permute", "Flatten",
             # these two compute their sizes at run time when their input varies (this module)
             "Pooling", "Crop"}


def size_agnostic(node: Node) -> bool:
    """Whether the ONNX converter of ``node`` follows input sizes known only at run time."""
    if node.op == "InnerProduct":
        return node.attrs["axis"] == 1  # Flatten + Gemm; another axis reshapes to a constant shape
    if node.op == "Interp":  # its rule is applied in the graph (.dynamic_layers); older graphs have none
        return "rule" in node.attrs
    if node.op == "Reshape":  # Caffe's rule on the run-time shape
        return bool(node.attrs.get("caffe_rule"))
    if node.op == "PriorBox":  # its image size follows the image input (.dynamic_layers)
        return prior_follows_input(node.attrs) and len(node.inputs) > 1
    if node.op == "DetectionOutput":  # the prior count from the run-time shapes (shared locations, no eta loop)
        return bool(node.attrs["share_location"]) and node.attrs["eta"] >= 1
    return node.op in _AGNOSTIC


def plan(graph: Graph) -> tuple[dict[str, list[int]], dict[str, set[int]]]:
    """(input -> axes made symbolic, varying value -> its varying axes) for this graph."""
    return symbolic_axes(graph, size_agnostic)


def input_dims(graph: Graph, symbolic: dict[str, list[int]]) -> dict[str, list[int | str]]:
    """The ONNX input shape of each input: ``N``, then each symbolic axis by name (``H``, ``W``; with
    several inputs ``<input>_H``), the rest as read."""
    several = len(graph.inputs) > 1
    dims: dict[str, list[int | str]] = {}
    for name, shape in graph.inputs.items():
        row: list[int | str] = ["N"]
        for axis in range(1, len(shape)):
            if axis in symbolic.get(name, ()):
                label = axis_name(len(shape), axis)
                row.append(f"{name}_{label}" if several else label)
            else:
                row.append(int(shape[axis]))
        dims[name] = row
    return dims


def _i64(b: Builder, node: Node, what: str, values: list[int]) -> str:
    return b.const(node, what, np.asarray(values, dtype=np.int64))


def _pool_extent(b: Builder, node: Node, shape: str, axis: int, k: int, s: int, p: int, ceil: bool) -> tuple[str, str]:
    """(the input's size along ``axis``, the right padding Caffe's windows need), 1-D int64 tensors."""
    tag = "hw"[axis - 2]
    size = b.tmp("Slice", [shape, _i64(b, node, f"{tag}_at", [axis]), _i64(b, node, f"{tag}_to", [axis + 1])],
                 node, f"{tag}_size")
    span = b.tmp("Add", [size, _i64(b, node, f"{tag}_span", [2 * p - k + (s - 1 if ceil else 0)])], node, f"{tag}_span")
    out = b.tmp("Add", [b.tmp("Div", [span, _i64(b, node, f"{tag}_stride", [s])], node, f"{tag}_windows"),
                        _i64(b, node, f"{tag}_one", [1])], node, f"{tag}_out")
    if p > 0:  # Caffe drops a last window that would start in the right padding
        start = b.tmp("Mul", [b.tmp("Sub", [out, _i64(b, node, f"{tag}_one_b", [1])], node, f"{tag}_last"),
                              _i64(b, node, f"{tag}_stride_b", [s])], node, f"{tag}_last_start")
        limit = b.tmp("Add", [size, _i64(b, node, f"{tag}_pad", [p])], node, f"{tag}_limit")
        beyond = b.tmp("Cast", [b.tmp("GreaterOrEqual", [start, limit], node, f"{tag}_beyond")], node,
                       f"{tag}_drop", to=TensorProto.INT64)
        out = b.tmp("Sub", [out, beyond], node, f"{tag}_kept")
    reach = b.tmp("Add", [b.tmp("Mul", [b.tmp("Sub", [out, _i64(b, node, f"{tag}_one_c", [1])], node, f"{tag}_n"),
                                        _i64(b, node, f"{tag}_stride_c", [s])], node, f"{tag}_offset"),
                          _i64(b, node, f"{tag}_k_less_p", [k - p])], node, f"{tag}_reach")
    right = b.tmp("Max", [b.tmp("Sub", [reach, size], node, f"{tag}_over"), _i64(b, node, f"{tag}_zero", [0])],
                  node, f"{tag}_right")
    return size, right


def pool(b: Builder, node: Node) -> None:
    """Caffe's MAX/AVE pooling (not global) of an input whose H or W is known only at run time."""
    a = node.attrs
    is_max = a["method"] == "max"
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    x = b.inp(node)
    shape = b.tmp("Shape", [x], node, "in_shape")
    h, rh = _pool_extent(b, node, shape, 2, kh, sh, ph, a["ceil"])
    w, rw = _pool_extent(b, node, shape, 3, kw, sw, pw, a["ceil"])
    pads = b.tmp("Concat", [_i64(b, node, "pads_left", [0, 0, ph, pw, 0, 0]), rh, rw], node, "pads", axis=0)
    fill = b.const(node, "fill", np.array(-np.inf if is_max else 0.0, dtype=np.float32))
    padded = b.tmp("Pad", [x, pads, fill], node, "pad", mode="constant")
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
    if is_max:
        b.add("MaxPool", [padded], b.out(node), node.name, **attrs)
        return
    mean = b.tmp("AveragePool", [padded], node, "mean", **attrs)
    # Caffe's divisor: a window counts the padding inside size + pad, not the ceil overhang beyond it
    plane = b.tmp("Concat", [_i64(b, node, "one_one", [1, 1]), h, w], node, "plane", axis=0)
    ones = b.tmp("ConstantOfShape", [plane], node, "ones", value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    inner_h = b.tmp("Min", [rh, _i64(b, node, "ph", [ph])], node, "inner_h")
    inner_w = b.tmp("Min", [rw, _i64(b, node, "pw", [pw])], node, "inner_w")
    counted = b.tmp("Pad", [ones, b.tmp("Concat", [_i64(b, node, "mask_left", [0, 0, ph, pw, 0, 0]), inner_h, inner_w],
                                         node, "mask_pads", axis=0), b.const(node, "one", np.array(1.0, np.float32))],
                    node, "counted", mode="constant")
    outer = b.tmp("Concat", [_i64(b, node, "zero_left", [0, 0, 0, 0, 0, 0]),
                             b.tmp("Sub", [rh, inner_h], node, "outer_h"), b.tmp("Sub", [rw, inner_w], node, "outer_w")],
                  node, "outer_pads", axis=0)
    mask = b.tmp("Pad", [counted, outer], node, "mask", mode="constant")
    share = b.tmp("AveragePool", [mask], node, "divisor_share", **attrs)
    b.add("Div", [mean, share], b.out(node), node.name)


def crop(b: Builder, node: Node) -> None:
    """Caffe's Crop when the reference's size is known only at run time: ``x[o : o + ref.shape]`` from
    the crop axis on."""
    axis, offsets = node.attrs["axis"], node.attrs["offsets"]
    rank = b.rank(node.inputs[0])
    axes = list(range(axis, rank))
    ref_shape = b.tmp("Shape", [b.inp(node, 1)], node, "ref_shape")
    sizes = b.tmp("Slice", [ref_shape, _i64(b, node, "from", [axis]), _i64(b, node, "to", [rank])], node, "sizes")
    ends = b.tmp("Add", [sizes, _i64(b, node, "offsets", [offsets[i] for i in axes])], node, "ends")
    b.add("Slice", [b.inp(node), _i64(b, node, "starts", [offsets[i] for i in axes]), ends,
                    _i64(b, node, "axes", axes)], b.out(node), node.name)
