"""The neutral tensor graph: what every Caffe model becomes and every target is written from.

A :class:`Graph` is plain data (dataclasses, lists, dicts, numpy float32 arrays), framework-free and in
Caffe's NCHW layout. Caffe's semantics are spelled out in the node attributes so that no target has to
know Caffe's defaults: pads, strides and kernels are explicit ``[h, w]`` pairs, pooling says whether it
rounds up, BatchNorm statistics already have the moving-average factor divided out, negative axes are
normalised.

Values vs. blobs: Caffe reuses a blob name when a layer works in place (``top == bottom``, e.g. every
ReLU, BatchNorm and Scale in ResNet). In the graph each produced value has its own name: a blob written
once is value ``b``; every write of a blob written several times is value ``b@L`` (``L`` the layer
writing it: ``conv1@conv1``, ``conv1@bn_conv1``, …, ``conv1@conv1_relu``), so every value can be asked
for by name. ``Graph.blobs`` maps each Caffe blob name to its *final* value, which is what pycaffe's
``net.blobs[b]`` shows after a forward pass; :meth:`Graph.value` accepts either kind of name.

Ops (``Node.op`` is the modern Caffe type name) and what each carries
-----------------------------------------------------------------------------------------------------
==============  ==========================================================  ==========================
op              attrs                                                        params (role -> tensor)
==============  ==========================================================  ==========================
Convolution     kernel, stride, pad, dilation ([h, w]); group; num_output     weight (O, C/g, kh, kw),
                                                                             bias (O) if present
Deconvolution   as Convolution (output = s*(H-1) + d*(k-1) + 1 - 2p)          weight (C, O/g, kh, kw),
                                                                             bias (O) if present
BatchNorm       eps (added to the variance before the square root)           running_mean (C),
                                                                             running_var (C)
Scale           axis, num_axes (one-input form only)                         weight, bias (opt.)
ReLU            negative_slope
ELU             alpha
PReLU           channel_shared                                               weight (C) or (1)
Sigmoid, TanH   -
Pooling         method ('max' | 'ave'), kernel, stride, pad ([h, w]),
                ceil (Caffe rounds output sizes up), global_pooling
Eltwise         operation ('sum' | 'prod' | 'max'), coeff (one per input)
InnerProduct    axis, num_output                                             weight (O, I), bias (O)
Softmax         axis
Dropout         ratio (identity at inference)
LRN             size, alpha, beta, k, region ('across' | 'within')
Concat          axis
Flatten         axis, end_axis
==============  ==========================================================  ==========================

Tensor keys are ``<caffe layer name>.<role>`` (``conv1.weight``, ``bn_conv1.running_mean``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffe2x.errors import Caffe2xError
from caffe2x.graph.numeric import dtype_text
from caffe2x.graph.registry import Registry

Shape = tuple[int, ...]

#: Version of the JSON form of a graph (stored in safetensors metadata). Bump on incompatible change.
GRAPH_FORMAT_VERSION = 1


@dataclass
class Node:
    """One Caffe layer as an operation on named values."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(d["name"], d["op"], list(d["inputs"]), list(d["outputs"]), dict(d["attrs"]), dict(d["params"]))


@dataclass
class Graph:
    """A network: inputs, nodes in execution order, named tensors, and every value's shape."""

    name: str
    inputs: dict[str, Shape]
    nodes: list[Node]
    tensors: dict[str, np.ndarray]
    shapes: dict[str, Shape] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)

    # ----------------------------------------------------------------- lookups
    def node(self, name: str) -> Node:
        """The node made from the Caffe layer called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def param(self, node: Node, role: str) -> np.ndarray:
        return self.tensors[node.params[role]]

    def value(self, blob_or_value: str) -> str:
        """Resolve a Caffe blob name (its final value) or a value name to a value name."""
        if blob_or_value in self.blobs:
            return self.blobs[blob_or_value]
        if blob_or_value in self.shapes:
            return blob_or_value
        raise Caffe2xError(f"no blob or value named {blob_or_value!r} in the graph")

    def blob_name(self, value: str) -> str:
        """The name a value is reported by: its Caffe blob when it is that blob's final value (what
        pycaffe's ``net.blobs`` shows), else the value's own name."""
        for blob, final in self.blobs.items():
            if final == value:
                return blob
        return value

    def logits(self) -> tuple[str, str]:
        """(value, why): what to compare a net's frameworks on. The input of the final Softmax when
        the net ends in one (``fc1000`` for ResNet: probabilities hide differences), else its first
        output."""
        if not self.outputs:
            raise Caffe2xError("the net has no output blob")
        out = self.outputs[0]
        more = f"; the net has {len(self.outputs)} outputs, the first is compared" if len(self.outputs) > 1 else ""
        last = self.producers().get(out)
        if last is not None and last.op == "Softmax":
            return last.inputs[0], f"input of the final Softmax {last.name!r}{more}"
        return out, f"the net's output blob (it does not end in a Softmax){more}"

    def producers(self) -> dict[str, Node]:
        """Map each value to the node that produces it."""
        return {out: n for n in self.nodes for out in n.outputs}

    def num_parameters(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))

    # ------------------------------------------------------------- (de)serialise
    def structure(self) -> dict[str, Any]:
        """The graph without tensor values, as JSON-ready data (tensor names, shapes, dtypes kept)."""
        return {
            "format": "caffe2x.graph",
            "version": GRAPH_FORMAT_VERSION,
            "name": self.name,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "outputs": list(self.outputs),
            "blobs": dict(self.blobs),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "nodes": [n.to_dict() for n in self.nodes],
            "tensors": {k: {"shape": list(v.shape), "dtype": dtype_text(v.dtype)} for k, v in self.tensors.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.structure(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_structure(cls, data: dict[str, Any], tensors: dict[str, np.ndarray]) -> Graph:
        if data.get("format") != "caffe2x.graph":
            raise Caffe2xError("not a caffe2x graph (metadata has no 'caffe2x.graph' format tag)")
        if data.get("version") != GRAPH_FORMAT_VERSION:
            raise Caffe2xError(f"caffe2x graph format version {data.get('version')} is not supported "
                               f"(this caffe2x reads version {GRAPH_FORMAT_VERSION})")
        missing = [k for k in data["tensors"] if k not in tensors]
        if missing:
            raise Caffe2xError(f"graph names tensor {missing[0]!r} but the file does not hold it")
        return cls(
            name=data["name"],
            inputs={k: tuple(v) for k, v in data["inputs"].items()},
            nodes=[Node.from_dict(d) for d in data["nodes"]],
            tensors={k: tensors[k] for k in data["tensors"]},
            shapes={k: tuple(v) for k, v in data["shapes"].items()},
            outputs=list(data["outputs"]),
            blobs=dict(data["blobs"]),
        )

    @classmethod
    def from_json(cls, text: str, tensors: dict[str, np.ndarray]) -> Graph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Caffe2xError(f"graph metadata is not valid JSON: {exc}") from None
        return cls.from_structure(data, tensors)

    def equals(self, other: Graph) -> bool:
        """Structure equal and every tensor bit-identical (same dtype, shape and bytes)."""
        if self.structure() != other.structure():
            return False
        return all(
            self.tensors[k].dtype == other.tensors[k].dtype
            and self.tensors[k].shape == other.tensors[k].shape
            and _same_bytes(self.tensors[k], other.tensors[k])
            for k in self.tensors
        )

    def copy(self, tensors: dict[str, np.ndarray] | None = None) -> Graph:
        """A structural copy (nodes copied) sharing or replacing the tensors."""
        return Graph.from_structure(self.structure(), dict(self.tensors) if tensors is None else tensors)


def _same_bytes(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Bit-identical (NaN payloads and the sign of zero count), compared 4 MB at a time: ``tobytes()`` of
    both would copy VGG-16's 553 MB twice."""
    x = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    y = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    return x.size == y.size and all(np.array_equal(x[i:i + chunk], y[i:i + chunk]) for i in range(0, x.size, chunk))


# --------------------------------------------------------------------------- shape inference
ShapeFn = Callable[[Node, list[Shape], "Graph"], list[Shape]]
#: op -> output-shape rule
SHAPE_FUNCTIONS: Registry[ShapeFn] = Registry("op")
shape_function = SHAPE_FUNCTIONS.register


def infer_shapes(graph: Graph) -> None:
    """Fill ``graph.shapes`` for every value, checking that each node's inputs and params fit."""
    shapes: dict[str, Shape] = {k: tuple(v) for k, v in graph.inputs.items()}
    for node in graph.nodes:
        fn = SHAPE_FUNCTIONS.lookup(node.op, node.name)
        for v in node.inputs:
            if v not in shapes:
                raise Caffe2xError(f"layer {node.name!r} reads blob {v!r}, which nothing produces before it")
        outs = fn(node, [shapes[v] for v in node.inputs], graph)
        for v, s in zip(node.outputs, outs):
            if any(d <= 0 for d in s):
                raise Caffe2xError(f"layer {node.name!r} gives output {v!r} the empty shape {list(s)}")
            shapes[v] = tuple(int(d) for d in s)
    graph.shapes = shapes


#: ops whose attributes were resolved for the input shapes the net was read at (Interp's output size,
#: PriorBox's image size and step, Upsample's output plane): at any other input shape but the batch they
#: would compute something Caffe would not, so :func:`caffe2x.graph.reshape.shapes_at` refuses it
SIZE_PINNED_OPS: set[str] = set()


def pins_input_size(*ops: str) -> None:
    """Declare ops that take only the input shapes (but the batch) they were read at."""
    SIZE_PINNED_OPS.update(ops)


def check_pinned(node: Node, ins: list[Shape], read: list[Shape | None]) -> None:
    """Refuse inputs ``ins`` of a size-pinned ``node`` that differ, but for the batch, from the shapes
    ``read`` it was read at (None: not known)."""
    for got, was in zip(ins, read):
        if was is not None and (len(got) != len(was) or tuple(got[1:]) != tuple(was[1:])):
            raise Caffe2xError(f"layer {node.name!r} ({node.op}) was resolved for an input shaped "
                               f"{list(was)} and takes only that shape (any batch), got {list(got)}")


#: ops whose first axis is not the batch (recurrent layers: time steps), or that combine the samples of a
#: batch in a way no shape or attribute shows; layer families add theirs with :func:`couples_samples`
SAMPLE_COUPLED_OPS: set[str] = set()


def couples_samples(*ops: str) -> None:
    """Declare ops whose output for one sample depends on other samples of the batch (or whose first axis
    is not the batch), so that :func:`samples_independent` never splits a batch through them."""
    SAMPLE_COUPLED_OPS.update(ops)


def samples_independent(graph: Graph, batch: int) -> bool:
    """Whether running the net on each of ``batch`` samples alone gives the same numbers as running them
    as one batch: at batch ``batch`` and at batch 1 every value has the batch as its first axis (shape
    inference gives the same shapes but for that axis), no op is declared sample-coupled, and no
    attribute acts along axis 0 (a Softmax, Scale or reduction over the batch, a Permute moving it,
    BatchNorm with batch statistics). Conservative: an op whose output does not depend on the batch at
    all (PriorBox) also says no. :mod:`caffe2x.validation.validator` runs photos one at a time only when this holds
    (SSD's DetectionOutput gathers every image's detections into one blob: its batch cannot be split)."""
    if len(graph.inputs) != 1 or batch < 1:
        return False
    for node in graph.nodes:
        a = node.attrs
        if (node.op in SAMPLE_COUPLED_OPS or a.get("axis") == 0 or 0 in (a.get("axes") or ())
                or (a.get("order") is not None and list(a["order"])[:1] != [0])):
            return False
    (name, shape), = graph.inputs.items()
    if not shape:
        return False
    at: dict[int, dict[str, Shape]] = {}
    for n in dict.fromkeys((batch, 1)):
        g = graph.copy()
        g.inputs = {name: (n, *shape[1:])}
        try:
            infer_shapes(g)
        except Caffe2xError:
            return False
        at[n] = g.shapes
    for v, full in at[batch].items():
        one = at[1].get(v)
        if one is None or not full or full[0] != batch or one != (1, *full[1:]):
            return False
    return True


def _expect_rank(node: Node, shape: Shape, rank: int) -> None:
    if len(shape) != rank:
        raise Caffe2xError(f"layer {node.name!r} ({node.op}) needs a {rank}-D input, got shape {list(shape)}")


def _expect_param(node: Node, graph: Graph, role: str, shape: Shape) -> None:
    t = graph.tensors.get(node.params.get(role, ""))
    if t is None:
        raise Caffe2xError(f"layer {node.name!r} ({node.op}) has no {role} tensor")
    if tuple(t.shape) != tuple(shape):
        raise Caffe2xError(f"layer {node.name!r} ({node.op}) {role} has shape {list(t.shape)}, expected {list(shape)}")


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Caffe's convolution output size (floor)."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    """Caffe's pooling output size: rounded up (or down), then the last window dropped if it would
    start at or beyond ``size + pad`` (only possible when ``pad > 0``)."""
    span = size + 2 * pad - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def deconv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Caffe's deconvolution output size: the input size of the convolution it transposes."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


@shape_function("Convolution", "Deconvolution")
def _conv_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    _expect_rank(node, x, 4)
    a = node.attrs
    n, c, h, w = x
    g, o = a["group"], a["num_output"]
    if c % g or o % g:
        raise Caffe2xError(f"layer {node.name!r}: channels {c} / num_output {o} not divisible by group {g}")
    if node.op == "Convolution":
        weight, size = (o, c // g, *a["kernel"]), conv_output_size
    else:  # Caffe keeps a deconvolution's weights as (C_in, C_out/group, kh, kw)
        weight, size = (c, o // g, *a["kernel"]), deconv_output_size
    _expect_param(node, graph, "weight", weight)
    if "bias" in node.params:
        _expect_param(node, graph, "bias", (o,))
    oh = size(h, a["kernel"][0], a["stride"][0], a["pad"][0], a["dilation"][0])
    ow = size(w, a["kernel"][1], a["stride"][1], a["pad"][1], a["dilation"][1])
    return [(n, o, oh, ow)]


@shape_function("BatchNorm")
def _bn_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    if len(x) < 2:
        raise Caffe2xError(f"layer {node.name!r} (BatchNorm) needs at least a 2-D input, got {list(x)}")
    _expect_param(node, graph, "running_mean", (x[1],))
    _expect_param(node, graph, "running_var", (x[1],))
    return [x]


@shape_function("Scale")
def _scale_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    axis, num_axes = node.attrs["axis"], node.attrs["num_axes"]
    pshape = x[axis:] if num_axes == -1 else x[axis:axis + num_axes]
    _expect_param(node, graph, "weight", pshape)
    if "bias" in node.params:
        _expect_param(node, graph, "bias", pshape)
    return [x]


@shape_function("ReLU", "ELU", "Sigmoid", "TanH", "Dropout", "LRN", "Softmax")
def _same_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    if node.op == "LRN":
        _expect_rank(node, ins[0], 4)
    return [ins[0]]


@shape_function("PReLU")
def _prelu_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    _expect_param(node, graph, "weight", (1,) if node.attrs["channel_shared"] else (x[1],))
    return [x]


@shape_function("Pooling")
def _pool_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    _expect_rank(node, x, 4)
    a = node.attrs
    n, c, h, w = x
    if a["global_pooling"]:
        return [(n, c, 1, 1)]
    oh = pool_output_size(h, a["kernel"][0], a["stride"][0], a["pad"][0], a["ceil"])
    ow = pool_output_size(w, a["kernel"][1], a["stride"][1], a["pad"][1], a["ceil"])
    return [(n, c, oh, ow)]


@shape_function("Eltwise")
def _eltwise_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    for s in ins[1:]:
        if s != ins[0]:
            raise Caffe2xError(f"layer {node.name!r} (Eltwise) inputs differ in shape: {list(ins[0])} vs {list(s)}")
    return [ins[0]]


@shape_function("InnerProduct")
def _ip_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    axis = node.attrs["axis"]
    k = int(np.prod(x[axis:]))
    _expect_param(node, graph, "weight", (node.attrs["num_output"], k))
    if "bias" in node.params:
        _expect_param(node, graph, "bias", (node.attrs["num_output"],))
    return [(*x[:axis], node.attrs["num_output"])]


@shape_function("Concat")
def _concat_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    axis = node.attrs["axis"]
    first = ins[0]
    for s in ins[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
            raise Caffe2xError(f"layer {node.name!r} (Concat) inputs {list(first)} and {list(s)} differ off axis {axis}")
    return [(*first[:axis], sum(s[axis] for s in ins), *first[axis + 1:])]


@shape_function("Flatten")
def _flatten_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    a, e = node.attrs["axis"], node.attrs["end_axis"]
    return [(*x[:a], int(np.prod(x[a:e + 1])), *x[e + 1:])]


def normalize_axis(axis: int, rank: int, layer: str) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end."""
    if not -rank <= axis < rank:
        raise Caffe2xError(f"layer {layer!r}: axis {axis} is out of range for a {rank}-D blob")
    return axis % rank
