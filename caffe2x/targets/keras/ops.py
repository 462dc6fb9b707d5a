"""The Keras target's op registry :data:`OPS`: one builder ``fn(ctx, node, inputs) -> outputs`` per Caffe op,
with the naming and layout helpers builders share. Op families beside this module
(``caffe2x/targets/keras/<family>.py``) register more builders with :func:`builder`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.registry import Registry
from caffe2x.targets.keras.layers import CaffeEltwiseSum, CaffeLRN, CaffePooling2D, CaffeScale

#: Caffe NCHW axis -> Keras NHWC axis, for 4-D blobs
NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")

#: Keras' HDF5 attribute size limit; longer name lists are split into name0, name1, ... as Keras does
_HDF5_OBJECT_HEADER_LIMIT = 64512


def keras_name(caffe_name: str) -> str:
    """The Keras layer name for a Caffe name: characters outside ``[A-Za-z0-9_.-]`` become ``_``."""
    return _INVALID_NAME_CHARS.sub("_", caffe_name) or "_"


def keras_axis(axis: int, rank: int) -> int:
    """Where Caffe's ``axis`` of a rank-``rank`` blob lives in the Keras tensor (4-D blobs are NHWC)."""
    return NCHW_TO_NHWC[axis] if rank == 4 else axis


# --------------------------------------------------------------------------- building
@dataclass
class BuildContext:
    """What a builder needs: the graph (shapes, params) and unique Keras layer names."""

    graph: Graph
    #: values whose shape is known only at run time, each with its varying (Caffe) axes (see
    #: :mod:`.dynamic`): their builders must not bake in sizes
    varying: dict[str, set[int]] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)  # id(node) -> Keras name
    _used: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node in self.graph.nodes:  # Caffe layers claim their names first (by node: names may repeat)
            self._names[id(node)] = self._claim(keras_name(node.name))

    def _claim(self, base: str) -> str:
        name, i = base, 1
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def name(self, node: Node) -> str:
        """The Keras name of the layer that stands for ``node``."""
        return self._names[id(node)]

    def aux(self, node: Node, role: str) -> str:
        """A fresh name for a helper layer of ``node`` (``<name>__pad``, ``<name>__nchw`` …)."""
        return self._claim(f"{self._names[id(node)]}__{role}")

    def input_name(self, blob: str) -> str:
        return self._claim(keras_name(blob))

    def rank(self, value: str) -> int:
        return len(self.graph.shapes[value])

    def varies(self, value: str) -> bool:
        """Whether ``value``'s shape (but the batch) is known only at run time (symbolic input sizes)."""
        return bool(self.varying.get(value, set()) - {0})

    def shape(self, value: str) -> tuple[int, ...]:
        """Caffe (NCHW) shape of a value."""
        return tuple(self.graph.shapes[value])

    def param(self, node: Node, role: str) -> np.ndarray:
        return np.asarray(self.graph.param(node, role), dtype=np.float32)

    def to_caffe_order(self, node: Node, t: Any, rank: int) -> Any:
        """NHWC -> NCHW for a 4-D tensor (other ranks are already in Caffe's order)."""
        return keras.layers.Permute((3, 1, 2), name=self.aux(node, "nchw"))(t) if rank == 4 else t

    def from_caffe_order(self, node: Node, t: Any, rank: int) -> Any:
        """NCHW -> NHWC for a 4-D tensor."""
        return keras.layers.Permute((2, 3, 1), name=self.aux(node, "nhwc"))(t) if rank == 4 else t


Builder = Callable[[BuildContext, Node, list[Any]], list[Any]]
#: op -> builder ``fn(ctx, node, inputs) -> outputs``
OPS: Registry[Builder] = Registry("op (Keras target)")
BUILDERS = OPS  # the name used before the target became a package
builder = OPS.register


def set_weights(layer: keras.layers.Layer, **values: np.ndarray | None) -> None:
    """Assign a built layer's variables by name (``kernel=…, bias=…``), checking every one is given.

    By name rather than by position so a change in Keras' variable order cannot silently swap them.
    """
    given = {k: v for k, v in values.items() if v is not None}
    variables = _variables_by_name(layer, given)
    for name, value in given.items():
        set_weights_of(layer, variables[name], name, np.asarray(value, dtype=np.float32))


def _variables_by_name(layer: keras.layers.Layer, given: dict[str, Any]) -> dict[str, Any]:
    """The layer's variables by name, which must be exactly those a builder gave values for."""
    variables = {v.name: v for v in layer.weights}
    if set(variables) != set(given):
        raise Caffe2xError(f"internal: layer {layer.name!r} has variables {sorted(variables)}, "
                           f"builder gave {sorted(given)}")
    return variables


#: a value larger than this is assigned a slice of rows at a time (see :func:`assign_in_slices`)
ASSIGN_SLICE_BYTES = 32 << 20


def assign_in_slices(var: Any, value: np.ndarray) -> None:
    """``var.assign(value)``, a slice of leading-axis rows at a time when ``value`` is large.

    Why: assigning converts the whole value to a tensor (a contiguous copy of a transposed kernel,
    then the tensor's own), so VGG-16's 411 MB fc6 kernel cost about 1.2 GB of temporaries beside the
    variable. Slices of at most :data:`ASSIGN_SLICE_BYTES` keep that to a few tens of MB; the values
    assigned are the same. Only with the TensorFlow backend (its variables take sliced assignments)."""
    target = getattr(var, "value", None)
    if value.nbytes <= ASSIGN_SLICE_BYTES or value.ndim == 0 or not hasattr(target, "__getitem__") \
            or keras.backend.backend() != "tensorflow":
        var.assign(value)
        return
    rows = max(1, ASSIGN_SLICE_BYTES // max(1, value[0].nbytes))
    for start in range(0, value.shape[0], rows):
        target[start:start + rows].assign(np.ascontiguousarray(value[start:start + rows]))


class _Given:
    """A Keras initializer that returns a builder's value, so a variable is created holding its final
    numbers (checked against the variable's shape) instead of being filled once and assigned again."""

    def __init__(self, layer: str, variable: str, value: np.ndarray) -> None:
        self.layer, self.variable, self.value = layer, variable, value

    def __call__(self, shape: Any, dtype: Any = None) -> np.ndarray:
        if tuple(int(d) for d in shape) != self.value.shape:
            raise Caffe2xError(f"layer {self.layer!r}: {self.variable} has shape {list(self.value.shape)}, "
                               f"Keras expects {[int(d) for d in shape]}")
        value, self.value = self.value, np.empty((0,), np.float32)  # the variable holds it now
        return value


def built_with(layer: keras.layers.Layer, x: Any, **values: np.ndarray | None) -> Any:
    """``layer(x)`` with its variables created holding ``values`` (by variable name: ``kernel=…,
    bias=…``; a None value: the layer has no such variable), through the layer's
    ``<name>_initializer`` attributes; every given variable must exist and no other may.

    Why: creating them as Keras' random draw (VGG-16: 138 M numbers, seconds) or as zeros and then
    assigning the values fills every variable twice and left ~34 MB of ResNet-50's assignment
    temporaries with the allocator; created from the value, each variable is written once (one
    transient contiguous copy of a transposed kernel). A value over :data:`ASSIGN_SLICE_BYTES` is
    still created as zeros and assigned a slice of rows at a time (:func:`assign_in_slices`: a whole
    copy of VGG-16's 411 MB fc6 beside the variable is what slices avoid). An absent kernel / bias is
    created as zeros, never drawn. The layer keeps its configured initializers (what ``get_config``
    and a saved ``.keras`` record), restored after the build."""
    given = {k: np.asarray(v, dtype=np.float32) for k, v in values.items() if v is not None}
    names = set(given) | {n for n in ("kernel", "bias") if hasattr(layer, f"{n}_initializer")}
    saved = {f"{n}_initializer": getattr(layer, f"{n}_initializer") for n in names}
    later: dict[str, np.ndarray] = {}
    for name in names:
        value = given.get(name)
        if value is not None and value.nbytes <= ASSIGN_SLICE_BYTES:
            init: Any = _Given(layer.name, name, np.ascontiguousarray(value))
        else:
            init = keras.initializers.Zeros()
            if value is not None:
                later[name] = value
        setattr(layer, f"{name}_initializer", init)
    try:
        y = layer(x)
    finally:
        for attr, init in saved.items():
            setattr(layer, attr, init)
    variables = _variables_by_name(layer, given)
    for name, value in later.items():
        set_weights_of(layer, variables[name], name, value)
    return y


def set_weights_of(layer: keras.layers.Layer, var: Any, name: str, value: np.ndarray) -> None:
    """Assign one variable of ``layer`` (shape checked), in slices when large."""
    if tuple(var.shape) != value.shape:
        raise Caffe2xError(f"layer {layer.name!r}: {name} has shape {list(value.shape)}, "
                           f"Keras expects {list(var.shape)}")
    assign_in_slices(var, value)


# --------------------------------------------------------------------------- builders
@builder("Convolution")
def _conv(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """ZeroPadding2D (Caffe pads symmetrically, Keras' 'same' does not) + Conv2D 'valid'.

    Keras refuses stride > 1 together with dilation > 1; then the dilated convolution runs at stride 1
    and a 1x1 MaxPooling2D with the stride picks every s-th position, which is exactly Caffe's output.
    """
    (x,) = ins
    a = node.attrs
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
    if ph or pw:
        x = keras.layers.ZeroPadding2D(((ph, ph), (pw, pw)), name=ctx.aux(node, "pad"))(x)
    split_stride = (dh > 1 or dw > 1) and (sh > 1 or sw > 1)
    layer = keras.layers.Conv2D(a["num_output"], (kh, kw), strides=(1, 1) if split_stride else (sh, sw),
                                padding="valid", dilation_rate=(dh, dw), groups=a["group"],
                                use_bias="bias" in node.params, name=ctx.name(node))
    # Caffe (O, C/g, kh, kw) -> Keras (kh, kw, C/g, O); both put output channel o in group o // (O/g)
    y = built_with(layer, x, kernel=ctx.param(node, "weight").transpose(2, 3, 1, 0),
                   bias=ctx.param(node, "bias") if "bias" in node.params else None)
    if split_stride:
        y = keras.layers.MaxPooling2D(pool_size=(1, 1), strides=(sh, sw), name=ctx.aux(node, "stride"))(y)
    return [y]


@builder("Deconvolution")
def _deconv(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Conv2DTranspose 'valid' (output ``s*(H-1) + d*(k-1) + 1``) then Cropping2D by Caffe's pad.

    A dilated kernel is written out with zeros between its taps (TensorFlow's CPU kernel has no
    dilated transposed convolution).
    Keras' transposed convolution has no groups: a grouped deconvolution becomes one
    Conv2DTranspose per group on a channel slice, concatenated (the slices are 1x1 convolutions
    with 0/1 kernels, which select channels exactly).
    """
    (x,) = ins
    a = node.attrs
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
    g, o = a["group"], a["num_output"]
    weight = ctx.param(node, "weight")  # (C, O/g, kh, kw)
    bias = ctx.param(node, "bias") if "bias" in node.params else None
    c = weight.shape[0]
    cg, og = c // g, o // g
    if dh > 1 or dw > 1:
        # TensorFlow's CPU transposed convolution has no dilation (and Keras none with stride > 1):
        # spell the dilated kernel out with zeros between its taps, the same sum exactly
        dilated = np.zeros((*weight.shape[:2], dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=weight.dtype)
        dilated[:, :, ::dh, ::dw] = weight
        weight, (kh, kw), (dh, dw) = dilated, dilated.shape[2:], (1, 1)
    outs = []
    for gi in range(g):
        xg = x
        if g > 1:
            select = keras.layers.Conv2D(cg, 1, use_bias=False, name=ctx.aux(node, f"group{gi}_in"))
            xg = select(x)
            pick = np.zeros((1, 1, c, cg), dtype=np.float32)
            pick[0, 0, gi * cg + np.arange(cg), np.arange(cg)] = 1.0
            set_weights(select, kernel=pick)
        layer = keras.layers.Conv2DTranspose(
            og, (kh, kw), strides=(sh, sw), padding="valid", dilation_rate=(dh, dw), use_bias=bias is not None,
            name=ctx.name(node) if g == 1 else ctx.aux(node, f"group{gi}"))
        # Caffe (C, O/g, kh, kw) -> Keras Conv2DTranspose (kh, kw, O/g, C/g)
        y = built_with(layer, xg, kernel=weight[gi * cg:(gi + 1) * cg].transpose(2, 3, 1, 0),
                       bias=None if bias is None else bias[gi * og:(gi + 1) * og])
        outs.append(y)
    y = outs[0] if g == 1 else keras.layers.Concatenate(axis=-1, name=ctx.name(node))(outs)
    if ph or pw:
        y = keras.layers.Cropping2D(((ph, ph), (pw, pw)), name=ctx.aux(node, "crop"))(y)
    return [y]


@builder("Pooling")
def _pool(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Standard Keras pooling where its geometry is Caffe's, else :class:`CaffePooling2D`.

    Keras' 'valid' pooling rounds down. When Caffe's (ceil) output size equals the floor one, every
    window lies inside ``H + pad``, so AVE's divisor is the full window and ZeroPadding2D +
    AveragePooling2D is exact; MAX is exact only without padding (Keras would pad with zeros).
    """
    (x,) = ins
    a = node.attrs
    method = a["method"]
    if a["global_pooling"]:
        cls = keras.layers.GlobalMaxPooling2D if method == "max" else keras.layers.GlobalAveragePooling2D
        return [cls(keepdims=True, name=ctx.name(node))(x)]
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
    _, _, h, w = ctx.shape(node.inputs[0])
    _, _, oh, ow = ctx.shape(node.outputs[0])
    floor_sized = oh == (h + 2 * ph - kh) // sh + 1 and ow == (w + 2 * pw - kw) // sw + 1
    floor_sized = floor_sized and not ctx.varies(node.inputs[0])  # at another size it may not be
    if floor_sized and method == "ave":
        if ph or pw:
            x = keras.layers.ZeroPadding2D(((ph, ph), (pw, pw)), name=ctx.aux(node, "pad"))(x)
        return [keras.layers.AveragePooling2D((kh, kw), (sh, sw), padding="valid", name=ctx.name(node))(x)]
    if floor_sized and method == "max" and not (ph or pw):
        return [keras.layers.MaxPooling2D((kh, kw), (sh, sw), padding="valid", name=ctx.name(node))(x)]
    return [CaffePooling2D(method, (kh, kw), (sh, sw), (ph, pw), ceil=a["ceil"], name=ctx.name(node))(x)]


@builder("BatchNorm")
def _batchnorm(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """BatchNormalization without gamma/beta (Caffe's Scale carries those) and with Caffe's eps.

    The graph's statistics already have Caffe's moving-average factor divided out.
    """
    (x,) = ins
    rank = ctx.rank(node.inputs[0])
    layer = keras.layers.BatchNormalization(axis=keras_axis(1, rank), epsilon=float(node.attrs["eps"]),
                                            center=False, scale=False, name=ctx.name(node))
    y = built_with(layer, x, moving_mean=ctx.param(node, "running_mean"),
                   moving_variance=ctx.param(node, "running_var"))
    return [y]


@builder("Scale")
def _scale(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """:class:`CaffeScale`, its parameters reshaped to broadcast against the (NHWC) input.

    Caffe's parameter covers axes ``axis .. axis+num_axes``; laid out as a broadcast shape in Caffe
    order, permuted to NHWC for 4-D blobs, then stripped of leading 1s (per-channel -> ``(C,)``).
    """
    (x,) = ins
    rank = ctx.rank(node.inputs[0])
    axis = node.attrs["axis"]
    if axis == 0:
        raise Caffe2xError(f"layer {node.name!r} (Scale) scales the batch axis, which Keras cannot hold as a weight")
    weight = ctx.param(node, "weight")
    bias = ctx.param(node, "bias") if "bias" in node.params else None

    def layout(p: np.ndarray) -> np.ndarray:
        bshape = [1] * rank
        bshape[axis:axis + p.ndim] = p.shape
        p = p.reshape(bshape)
        if rank == 4:
            p = p.transpose(0, 2, 3, 1)
        p = p[0]
        while p.ndim > 1 and p.shape[0] == 1:
            p = p[0]
        return p

    w = layout(weight)
    layer = CaffeScale(w.shape, use_bias=bias is not None, name=ctx.name(node))
    y = built_with(layer, x, scale=w, bias=None if bias is None else layout(bias))
    return [y]


@builder("ReLU")
def _relu(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Keras ReLU's ``negative_slope`` is Caffe's leaky ReLU (``x * slope`` for ``x <= 0``)."""
    slope = float(node.attrs.get("negative_slope", 0.0))
    return [keras.layers.ReLU(negative_slope=slope, name=ctx.name(node))(ins[0])]


@builder("ELU")
def _elu(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return [keras.layers.ELU(alpha=float(node.attrs["alpha"]), name=ctx.name(node))(ins[0])]


@builder("PReLU")
def _prelu(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Keras PReLU with the slope shared over every axis but the channel one (all axes when Caffe's
    ``channel_shared``); channels are last for 4-D blobs, axis 1 otherwise."""
    (x,) = ins
    rank = len(ctx.shape(node.inputs[0]))
    channel = keras_axis(1, rank)
    slopes = ctx.param(node, "weight")
    keep = set() if node.attrs["channel_shared"] else {channel}
    shared = [a for a in range(1, rank) if a not in keep]
    layer = keras.layers.PReLU(shared_axes=shared or None, name=ctx.name(node))
    y = layer(x)
    alpha_shape = [1 if a in shared else ctx.shape(node.inputs[0])[1] for a in range(1, rank)]
    set_weights(layer, alpha=np.broadcast_to(slopes.reshape(-1), (int(np.prod(alpha_shape)),)).reshape(alpha_shape))
    return [y]


@builder("Sigmoid", "TanH")
def _activation(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    fn = {"Sigmoid": "sigmoid", "TanH": "tanh"}[node.op]
    return [keras.layers.Activation(fn, name=ctx.name(node))(ins[0])]


@builder("Dropout")
def _dropout(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Identity at inference, as in Caffe; kept as Dropout so fine-tuning in Keras behaves alike."""
    ratio = float(node.attrs.get("ratio", 0.5))
    if 0.0 <= ratio < 1.0:
        return [keras.layers.Dropout(ratio, name=ctx.name(node))(ins[0])]
    return [keras.layers.Identity(name=ctx.name(node))(ins[0])]


@builder("LRN")
def _lrn(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    return [CaffeLRN(a["size"], a["alpha"], a["beta"], a["k"], a["region"], name=ctx.name(node))(ins[0])]


@builder("Eltwise")
def _eltwise(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Add / Multiply / Maximum; SUM with coefficients other than 1 is :class:`CaffeEltwiseSum`."""
    op = node.attrs["operation"]
    name = ctx.name(node)
    if op == "sum":
        coeff = [float(c) for c in node.attrs.get("coeff") or [1.0] * len(ins)]
        if len(ins) > 1 and all(c == 1.0 for c in coeff):
            return [keras.layers.Add(name=name)(ins)]
        return [CaffeEltwiseSum(coeff, name=name)(ins)]
    if len(ins) == 1:
        return [keras.layers.Identity(name=name)(ins[0])]
    if op == "prod":
        return [keras.layers.Multiply(name=name)(ins)]
    if op == "max":
        return [keras.layers.Maximum(name=name)(ins)]
    raise UnsupportedLayerError(node.name, f"Eltwise {op}", "operation")


@builder("Concat")
def _concat(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    if len(ins) == 1:
        return [keras.layers.Identity(name=ctx.name(node))(ins[0])]
    axis = keras_axis(node.attrs["axis"], ctx.rank(node.inputs[0]))
    return [keras.layers.Concatenate(axis=axis, name=ctx.name(node))(ins)]


@builder("Softmax")
def _softmax(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    axis = keras_axis(node.attrs["axis"], ctx.rank(node.inputs[0]))
    return [keras.layers.Softmax(axis=axis, name=ctx.name(node))(ins[0])]


@builder("Flatten")
def _flatten(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Reshape in Caffe's order: a 4-D input is permuted back to NCHW first (C,H,W flattening)."""
    (x,) = ins
    a, e = node.attrs["axis"], node.attrs["end_axis"]
    if a == 0:
        raise Caffe2xError(f"layer {node.name!r} (Flatten) merges the batch axis, which a Keras model cannot")
    in_rank, out_rank = ctx.rank(node.inputs[0]), ctx.rank(node.outputs[0])
    out_shape = ctx.shape(node.outputs[0])
    if in_rank == 4 and out_rank == 4:  # flattening one axis: nothing to do
        return [keras.layers.Identity(name=ctx.name(node))(x)]
    x = ctx.to_caffe_order(node, x, in_rank)
    if out_rank == 2:
        y = keras.layers.Flatten(name=ctx.name(node))(x)
    else:
        y = keras.layers.Reshape(out_shape[1:], name=ctx.name(node))(x)
    return [ctx.from_caffe_order(node, y, out_rank)]


@builder("InnerProduct")
def _inner_product(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    """Dense over everything from ``axis``, in Caffe's flattening order.

    After a 4-D NHWC blob with ``axis == 1`` the activation is flattened in H,W,C order and the weight
    rows are permuted from C,H,W to match (free at run time). Other axes go through Caffe order.
    """
    (x,) = ins
    axis = node.attrs["axis"]
    if axis == 0:
        raise Caffe2xError(f"layer {node.name!r} (InnerProduct) with axis 0 mixes samples; not expressible in Keras")
    in_shape = ctx.shape(node.inputs[0])
    in_rank, out_rank = len(in_shape), axis + 1
    weight = ctx.param(node, "weight")  # (O, K), K in C,H,W order
    kernel = weight.T
    if in_rank == 4 and axis == 1:
        _, c, h, w = in_shape
        kernel = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1).T
        x = keras.layers.Flatten(name=ctx.aux(node, "flatten"))(x)
    elif in_rank != out_rank:
        x = ctx.to_caffe_order(node, x, in_rank)
        x = keras.layers.Reshape((*in_shape[1:axis], int(np.prod(in_shape[axis:]))), name=ctx.aux(node, "flatten"))(x)
    elif in_rank == 4:  # axis 3 of a 4-D blob: Dense over W, in Caffe order
        x = ctx.to_caffe_order(node, x, in_rank)
    layer = keras.layers.Dense(node.attrs["num_output"], use_bias="bias" in node.params, name=ctx.name(node))
    y = built_with(layer, x, kernel=kernel, bias=ctx.param(node, "bias") if "bias" in node.params else None)
    return [ctx.from_caffe_order(node, y, out_rank)]

