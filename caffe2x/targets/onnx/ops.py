"""The ONNX target's op registry :data:`OPS`: one converter per Caffe op appending its ONNX nodes to a
:class:`Builder`. Op families beside this module (``caffe2x/targets/onnx/<family>.py``) register more
converters with :func:`converter`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.numeric import to_bfloat16_bits
from caffe2x.graph.reference import pool_geometry
from caffe2x.graph.registry import Registry

#: ONNX operator set the models are written against
OPSET = 17
#: IR version written (the lowest that opset 17 allows, so older runtimes load the files)
IR_VERSION = 8
#: protobuf's hard limit on one serialised message
_PROTO_LIMIT = 2**31 - 1

_STORE_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}


# --------------------------------------------------------------------------- building context
class Builder:
    """Collects ONNX nodes and initializers for one graph; converters talk to it."""

    def __init__(self, graph: Graph, dtype: str = "float32") -> None:
        if dtype not in _STORE_TYPES:
            raise Caffe2xError(f"the onnx target cannot store tensors as {dtype!r}")
        self.graph = graph
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        #: the weights' TensorProtos without their data (dims, type, name); the data, an array whose
        #: bytes are the ``raw_data``, waits in :attr:`payloads` so that writing a file can stream it
        #: (:mod:`.files`) and only :func:`~.model.to_onnx` copies it into the message
        self.initializers: list[onnx.TensorProto] = []
        self.payloads: dict[str, np.ndarray] = {}
        self.names: dict[str, str] = {}       # graph value -> ONNX tensor name
        self._params: dict[str, str] = {}     # tensor key -> float32 ONNX tensor name
        self._used: set[str] = set(graph.shapes) | set(graph.tensors)
        self.batch_moved_values: set[str] | None = None  # see batch_moved(); computed on first use
        #: values whose shape is known only at run time (symbolic input sizes), each with its varying
        #: axes: their converters compute sizes in the graph (:mod:`.dynamic`) instead of baking them in
        self.varying: dict[str, set[int]] = {}

    # names ------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor name not used anywhere yet, ``base`` itself when free."""
        name, i = base, 2
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def name(self, value: str) -> str:
        return self.names.get(value, value)

    def rank(self, value: str) -> int:
        return len(self.graph.shapes[value])

    def shape(self, value: str) -> tuple[int, ...]:
        return tuple(self.graph.shapes[value])

    def varies(self, value: str) -> bool:
        """Whether ``value``'s shape (but the batch) is known only at run time."""
        return bool(self.varying.get(value, set()) - {0})

    # nodes ------------------------------------------------------------------
    def add(self, op_type: str, inputs: Sequence[str], output: str, name: str, **attrs: Any) -> str:
        """Append a node with one output; return the output's name."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attrs))
        return output

    def tmp(self, op_type: str, inputs: Sequence[str], node: Node, what: str, **attrs: Any) -> str:
        """A helper node of layer ``node`` writing a fresh intermediate ``<layer>/<what>``."""
        out = self.fresh(f"{node.name}/{what}")
        return self.add(op_type, inputs, out, out, **attrs)

    def const(self, node: Node, what: str, value: np.ndarray) -> str:
        """A ``Constant`` node (helper constants are not initializers: those are the weights only)."""
        out = self.fresh(f"{node.name}/{what}")
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name=out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out

    def shape_const(self, node: Node, what: str, dims: Sequence[int]) -> str:
        return self.const(node, what, np.asarray(list(dims), dtype=np.int64))

    def param(self, node: Node, role: str) -> str:
        """The float32 ONNX tensor holding ``node``'s parameter ``role`` (an initializer under its
        tensor key, behind a ``Cast`` when stored in a reduced dtype)."""
        key = node.params[role]
        if key in self._params:
            return self._params[key]
        arr = np.ascontiguousarray(self.graph.tensors[key], dtype="<f4")
        if self.dtype == "float32":
            self._initializer(key, TensorProto.FLOAT, arr)
            self._params[key] = key
            return key
        if self.dtype == "float16":
            self._initializer(key, TensorProto.FLOAT16, arr.astype("<f2"))
        else:
            self._initializer(key, TensorProto.BFLOAT16, np.ascontiguousarray(to_bfloat16_bits(arr), dtype="<u2"))
        out = self.fresh(f"{key}/cast")
        self.add("Cast", [key], out, out, to=TensorProto.FLOAT)
        self._params[key] = out
        return out

    def _initializer(self, key: str, data_type: int, payload: np.ndarray) -> None:
        tensor = onnx.TensorProto(name=key, data_type=data_type, dims=list(payload.shape))
        self.initializers.append(tensor)
        self.payloads[key] = payload

    def param_reshaped(self, node: Node, role: str, shape: Sequence[int]) -> str:
        """``param`` reshaped (a ``Reshape`` the runtime constant-folds)."""
        src = self.param(node, role)
        if tuple(self.graph.tensors[node.params[role]].shape) == tuple(shape):
            return src
        return self.tmp("Reshape", [src, self.shape_const(node, f"{role}_shape", shape)], node, f"{role}_reshaped")

    def out(self, node: Node, i: int = 0) -> str:
        return self.name(node.outputs[i])

    def inp(self, node: Node, i: int = 0) -> str:
        return self.name(node.inputs[i])


ConvertFn = Callable[[Builder, Node], None]
#: op -> converter appending the layer's ONNX nodes
OPS: Registry[ConvertFn] = Registry("op (ONNX target)")
CONVERTERS = OPS  # the name used before the target became a package
converter = OPS.register


# --------------------------------------------------------------------------- converters
@converter("Convolution", "Deconvolution")
def _conv(b: Builder, node: Node) -> None:
    """Conv, or ConvTranspose for Caffe's Deconvolution: ONNX shares Caffe's weight layouts
    ((O, C/g, kh, kw) and (C, O/g, kh, kw)) and, with no output_padding, its output sizes."""
    a = node.attrs
    inputs = [b.inp(node), b.param(node, "weight")]
    if "bias" in node.params:
        inputs.append(b.param(node, "bias"))
    ph, pw = a["pad"]
    b.add("Conv" if node.op == "Convolution" else "ConvTranspose", inputs, b.out(node), node.name,
          kernel_shape=list(a["kernel"]), strides=list(a["stride"]), pads=[ph, pw, ph, pw],
          dilations=list(a["dilation"]), group=a["group"])


@converter("BatchNorm")
def _batchnorm(b: Builder, node: Node) -> None:
    c = b.shape(node.inputs[0])[1]
    one = b.const(node, "scale", np.ones(c, dtype=np.float32))
    zero = b.const(node, "B", np.zeros(c, dtype=np.float32))
    b.add("BatchNormalization", [b.inp(node), one, zero, b.param(node, "running_mean"), b.param(node, "running_var")],
          b.out(node), node.name, epsilon=float(node.attrs["eps"]))


@converter("Scale")
def _scale(b: Builder, node: Node) -> None:
    axis = node.attrs["axis"]
    rank = b.rank(node.inputs[0])
    w = b.graph.param(node, "weight")
    shape = (*w.shape, *(1,) * (rank - axis - w.ndim))
    weight = b.param_reshaped(node, "weight", shape)
    if "bias" not in node.params:
        b.add("Mul", [b.inp(node), weight], b.out(node), node.name)
        return
    scaled = b.tmp("Mul", [b.inp(node), weight], node, "mul")
    b.add("Add", [scaled, b.param_reshaped(node, "bias", shape)], b.out(node), node.name)


@converter("ReLU")
def _relu(b: Builder, node: Node) -> None:
    slope = float(node.attrs.get("negative_slope", 0.0))
    if slope == 0.0:
        b.add("Relu", [b.inp(node)], b.out(node), node.name)
    else:
        b.add("LeakyRelu", [b.inp(node)], b.out(node), node.name, alpha=slope)


@converter("ELU")
def _elu(b: Builder, node: Node) -> None:
    b.add("Elu", [b.inp(node)], b.out(node), node.name, alpha=float(node.attrs["alpha"]))


@converter("PReLU")
def _prelu(b: Builder, node: Node) -> None:
    """ONNX PRelu broadcasts the slope from the right: per-channel slopes become (C, 1, …, 1)."""
    rank = b.rank(node.inputs[0])
    slopes = b.graph.param(node, "weight")
    shape = (slopes.size, *(1,) * (rank - 2)) if slopes.size > 1 else (1,)
    b.add("PRelu", [b.inp(node), b.param_reshaped(node, "weight", shape)], b.out(node), node.name)


@converter("Sigmoid", "TanH", "Dropout")
def _elementwise(b: Builder, node: Node) -> None:
    op_type = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "Dropout": "Identity"}[node.op]
    b.add(op_type, [b.inp(node)], b.out(node), node.name)


@converter("Pooling")
def _pool(b: Builder, node: Node) -> None:
    a = node.attrs
    is_max = a["method"] == "max"
    if a["method"] not in ("max", "ave"):
        raise Caffe2xError(f"layer {node.name!r}: pooling method {a['method']!r} is not supported")
    if a["global_pooling"]:
        b.add("GlobalMaxPool" if is_max else "GlobalAveragePool", [b.inp(node)], b.out(node), node.name)
        return
    if b.varies(node.inputs[0]):
        from caffe2x.targets.onnx.dynamic import pool

        pool(b, node)
        return
    _, _, h, w = b.shape(node.inputs[0])
    _, _, oh, ow = b.shape(node.outputs[0])
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    rh, div_h = pool_geometry(h, oh, kh, sh, ph)
    rw, div_w = pool_geometry(w, ow, kw, sw, pw)
    for size, pad, right, k, s, out in ((h, ph, rh, kh, sh, oh), (w, pw, rw, kw, sw, ow)):
        if (size + pad + right - k) // s + 1 != out:  # cannot happen for Caffe's sizes; guard the rule
            raise Caffe2xError(f"layer {node.name!r}: padded pooling gives {(size + pad + right - k) // s + 1} "
                               f"windows, Caffe has {out}")
    x = b.inp(node)
    if ph or pw or rh or rw:
        pads = b.const(node, "pads", np.array([0, 0, ph, pw, 0, 0, rh, rw], dtype=np.int64))
        fill = b.const(node, "fill", np.array(-np.inf if is_max else 0.0, dtype=np.float32))
        x = b.tmp("Pad", [x, pads, fill], node, "pad", mode="constant")
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw]}
    if is_max:
        b.add("MaxPool", [x], b.out(node), node.name, **attrs)
        return
    factor = np.float32(kh * kw) / np.outer(div_h, div_w).astype(np.float32)
    if np.all(factor == 1):
        b.add("AveragePool", [x], b.out(node), node.name, **attrs)
        return
    mean = b.tmp("AveragePool", [x], node, "mean", **attrs)
    b.add("Mul", [mean, b.const(node, "divisor_fix", factor.astype(np.float32))], b.out(node), node.name)


@converter("Eltwise")
def _eltwise(b: Builder, node: Node) -> None:
    operation = node.attrs["operation"]
    xs = [b.inp(node, i) for i in range(len(node.inputs))]
    if operation == "sum":
        coeff = node.attrs.get("coeff") or [1.0] * len(xs)
        terms = []
        for i, (c, x) in enumerate(zip(coeff, xs)):
            if c == 1:
                terms.append(x)
            else:
                terms.append(b.tmp("Mul", [x, b.const(node, f"coeff{i}", np.array(c, dtype=np.float32))], node, f"term{i}"))
        b.add("Add" if len(terms) == 2 else "Sum", terms, b.out(node), node.name)
    elif operation == "prod":
        acc = xs[0]
        for i, x in enumerate(xs[1:-1], start=1):
            acc = b.tmp("Mul", [acc, x], node, f"prod{i}")
        b.add("Mul", [acc, xs[-1]], b.out(node), node.name)
    elif operation == "max":
        b.add("Max", xs, b.out(node), node.name)
    else:
        raise UnsupportedLayerError(node.name, f"Eltwise {operation}", "operation")


@converter("InnerProduct")
def _inner_product(b: Builder, node: Node) -> None:
    axis = node.attrs["axis"]
    flat = b.tmp("Flatten", [b.inp(node)], node, "flatten", axis=axis)
    inputs = [flat, b.param(node, "weight")]
    if "bias" in node.params:
        inputs.append(b.param(node, "bias"))
    if axis == 1:
        b.add("Gemm", inputs, b.out(node), node.name, transB=1)
        return
    gemm = b.tmp("Gemm", inputs, node, "gemm", transB=1)
    if batch_moved(b, node.inputs[0]):  # the batch is not axis 0: keep the input's leading axes as they are
        lead = b.tmp("Slice", [b.tmp("Shape", [b.inp(node)], node, "in_shape"), b.shape_const(node, "lead0", [0]),
                               b.shape_const(node, "lead1", [axis])], node, "lead")
        shape = b.tmp("Concat", [lead, b.shape_const(node, "num_output", [int(node.attrs["num_output"])])], node,
                      "shape", axis=0)
        b.add("Reshape", [gemm, shape], b.out(node), node.name)
        return
    b.add("Reshape", [gemm, b.shape_const(node, "shape", _dynamic_batch(b.shape(node.outputs[0])))],
          b.out(node), node.name)


@converter("Softmax")
def _softmax(b: Builder, node: Node) -> None:
    b.add("Softmax", [b.inp(node)], b.out(node), node.name, axis=node.attrs["axis"])


@converter("LRN")
def _lrn(b: Builder, node: Node) -> None:
    a = node.attrs
    size, alpha, beta = int(a["size"]), float(a["alpha"]), float(a["beta"])
    x = b.inp(node)
    if a["region"] == "across":
        b.add("LRN", [x], b.out(node), node.name, size=size, alpha=alpha, beta=beta, bias=float(a["k"]))
        return
    if size % 2 == 0:
        raise Caffe2xError(f"layer {node.name!r}: WITHIN_CHANNEL LRN needs an odd local_size, got {size}")
    half = (size - 1) // 2
    sq = b.tmp("Mul", [x, x], node, "square")
    pads = b.const(node, "pads", np.array([0, 0, half, half, 0, 0, half, half], dtype=np.int64))
    padded = b.tmp("Pad", [sq, pads], node, "pad", mode="constant")
    mean = b.tmp("AveragePool", [padded], node, "mean", kernel_shape=[size, size], strides=[1, 1])
    scaled = b.tmp("Mul", [mean, b.const(node, "alpha", np.array(alpha, dtype=np.float32))], node, "scaled")
    base = b.tmp("Add", [scaled, b.const(node, "one", np.array(1.0, dtype=np.float32))], node, "base")
    factor = b.tmp("Pow", [base, b.const(node, "neg_beta", np.array(-beta, dtype=np.float32))], node, "factor")
    b.add("Mul", [x, factor], b.out(node), node.name)


@converter("Concat")
def _concat(b: Builder, node: Node) -> None:
    b.add("Concat", [b.inp(node, i) for i in range(len(node.inputs))], b.out(node), node.name, axis=node.attrs["axis"])


@converter("Flatten")
def _flatten(b: Builder, node: Node) -> None:
    if b.varies(node.inputs[0]):  # sizes known at run time: the input's own dims around the flattened ones
        rank, axis, end = b.rank(node.inputs[0]), node.attrs["axis"], node.attrs["end_axis"]
        dims = b.tmp("Shape", [b.inp(node)], node, "in_shape")
        parts = [b.tmp("Slice", [dims, b.shape_const(node, "head0", [0]), b.shape_const(node, "head1", [axis])],
                       node, "head"), b.shape_const(node, "flat", [-1]),
                 b.tmp("Slice", [dims, b.shape_const(node, "tail0", [end + 1]), b.shape_const(node, "tail1", [rank])],
                       node, "tail")]
        b.add("Reshape", [b.inp(node), b.tmp("Concat", parts, node, "shape", axis=0)], b.out(node), node.name)
        return
    shape = b.shape_const(node, "shape", _dynamic_batch(b.shape(node.outputs[0])))
    b.add("Reshape", [b.inp(node), shape], b.out(node), node.name)


def batch_moved(b: Builder, value: str) -> bool:
    """Whether ``value`` descends from a Permute that moved the first axis (the OCR fork's Transpose):
    its batch is then elsewhere, so a shape must come from the run-time input, not axis 0 + constants."""
    if b.batch_moved_values is None:  # once per model, in graph order
        moved: set[str] = set()
        for node in b.graph.nodes:
            if (node.op == "Permute" and int(node.attrs["order"][0]) != 0) or any(v in moved for v in node.inputs):
                moved.update(node.outputs)
        b.batch_moved_values = moved
    return value in b.batch_moved_values


def _dynamic_batch(shape: Sequence[int]) -> list[int]:
    """A Reshape target for ``shape`` whose first dimension follows the (dynamic) batch: every other
    dimension is static, so ``-1`` there is always the batch's share."""
    return [-1, *(int(d) for d in shape[1:])]


