"""Keras 3 target: a functional ``keras.Model`` with Caffe's exact semantics, and the files it is saved as.

Layout: every 4-D blob is NHWC (channels last, Keras' default and the only layout TensorFlow's CPU
convolutions support), so the model's input is NHWC. Blobs of any other rank keep Caffe's axis order.
The channels-last traps are handled where they arise: Caffe axes of 4-D blobs are mapped
(:func:`keras_axis`), an InnerProduct reading a 4-D blob gets its weight rows permuted from Caffe's
C,H,W flattening order to Keras' H,W,C order (free at run time), and a Flatten of a 4-D blob first
permutes back to NCHW so its output has Caffe's order.

Layer names: each Caffe layer becomes one Keras layer carrying its name (plus helper layers such as
``<name>__pad`` for an explicit ZeroPadding2D). Names are sanitised by one rule, :func:`keras_name`:
every character outside ``[A-Za-z0-9_.-]`` becomes ``_`` (TensorFlow scope names allow nothing else,
and Keras forbids ``/``); a name already taken gets ``_2``, ``_3``, … (Caffe layer names are claimed
first, in net order, then input blob names, then helper layers).

Standard Keras layers are used wherever they compute exactly what Caffe does; the rest are small
registered custom layers in :mod:`caffe2x.targets.keras_layers`. Adding an op is one function
registered with :func:`builder`.

Files (:func:`write`):

* ``.h5`` -- weights in Keras' HDF5 weights layout (root attrs ``layer_names``, ``backend``,
  ``keras_version``; per layer ``weight_names`` and datasets ``<layer>/<layer>/<weight>``), written
  with h5py. Load with ``model = caffe2x.to_keras(graph); model.load_weights("net.h5")``: Keras 3
  reads a plain ``.h5`` (not ``.weights.h5``) with its legacy HDF5 loader, by layer order or with
  ``by_name=True``. A destination named ``*.weights.h5`` gets Keras 3's native weights format instead,
  since that is the loader Keras picks for that name.
* ``.h5`` with ``full_model=True`` -- the whole model (config + weights), via ``model.save``; load with
  ``import caffe2x.targets.keras`` then ``keras.models.load_model(path)``.
* ``.keras`` -- Keras 3's native format, via ``model.save``; load the same way.
* ``profile="keras-applications"`` -- an ``.h5`` that ``keras.applications.ResNet50(weights=None)``
  (or ResNet101/152) loads with ``load_weights``; see :func:`write_keras_applications`.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import Caffe2xError, UnsupportedLayerError  # noqa: E402
from ..ir import Graph, Node  # noqa: E402
from ..numeric import max_rel_error, round_to  # noqa: E402
from ..reference import resolve_outputs  # noqa: E402
from ..registry import Registry  # noqa: E402
from ..reference import run as reference_run  # noqa: E402
from . import WriteOptions  # noqa: E402
from .keras_layers import CUSTOM_OBJECTS, CaffeEltwiseSum, CaffeLRN, CaffePooling2D, CaffeScale  # noqa: E402

__all__ = ["SUFFIXES", "BUILDERS", "CUSTOM_OBJECTS", "builder", "keras_axis", "keras_name", "to_model", "write",
           "write_weights_h5", "write_keras_applications"]

SUFFIXES = (".h5", ".keras")

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
BUILDERS: Registry[Builder] = Registry("op (Keras target)")
builder = BUILDERS.register


def set_weights(layer: keras.layers.Layer, **values: np.ndarray | None) -> None:
    """Assign a built layer's variables by name (``kernel=…, bias=…``), checking every one is given.

    By name rather than by position so a change in Keras' variable order cannot silently swap them.
    """
    given = {k: v for k, v in values.items() if v is not None}
    variables = {v.name: v for v in layer.weights}
    if set(variables) != set(given):
        raise Caffe2xError(f"internal: layer {layer.name!r} has variables {sorted(variables)}, "
                           f"builder gave {sorted(given)}")
    for name, value in given.items():
        var = variables[name]
        value = np.asarray(value, dtype=np.float32)
        if tuple(var.shape) != value.shape:
            raise Caffe2xError(f"layer {layer.name!r}: {name} has shape {list(value.shape)}, "
                               f"Keras expects {list(var.shape)}")
        var.assign(value)


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
        outs = BUILDERS.lookup(node.op, node.name)(ctx, node, [tensors[v] for v in node.inputs])
        for value, t in zip(node.outputs, outs):
            tensors[value] = t
    names = resolve_outputs(graph, outputs)
    outs = [tensors[graph.value(n)] for n in names]
    return keras.Model(inputs=inputs[0] if len(inputs) == 1 else inputs,
                       outputs=outs[0] if len(outs) == 1 else outs,
                       name=keras_name(graph.name or "caffe2x"))


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
    y = layer(x)
    # Caffe (O, C/g, kh, kw) -> Keras (kh, kw, C/g, O); both put output channel o in group o // (O/g)
    set_weights(layer, kernel=ctx.param(node, "weight").transpose(2, 3, 1, 0),
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
        y = layer(xg)
        # Caffe (C, O/g, kh, kw) -> Keras Conv2DTranspose (kh, kw, O/g, C/g)
        set_weights(layer, kernel=weight[gi * cg:(gi + 1) * cg].transpose(2, 3, 1, 0),
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
    y = layer(x)
    set_weights(layer, moving_mean=ctx.param(node, "running_mean"),
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
    y = layer(x)
    set_weights(layer, scale=w, bias=None if bias is None else layout(bias))
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
    y = layer(x)
    set_weights(layer, kernel=kernel, bias=ctx.param(node, "bias") if "bias" in node.params else None)
    return [ctx.from_caffe_order(node, y, out_rank)]


# --------------------------------------------------------------------------- files
def write(graph: Graph, path: str | os.PathLike[str], options: WriteOptions) -> list[str]:
    """Write ``graph`` to ``path`` (``.h5`` weights, ``.h5`` full model, ``.keras``); return notes."""
    path = Path(path)
    suffix = path.suffix.lower()
    full_model = bool(options.extra.get("full_model"))
    if suffix not in SUFFIXES:
        raise Caffe2xError(f"the keras target writes {', '.join(SUFFIXES)} files, not {path.name!r}")
    if options.profile is not None:
        if options.profile != "keras-applications":
            raise Caffe2xError(f"unknown Keras naming profile {options.profile!r}; the Keras target knows "
                               f"'keras-applications'")
        if suffix != ".h5" or full_model:
            raise Caffe2xError("the keras-applications profile writes a weights-only .h5 for "
                               "keras.applications (no --full-model, no .keras)")
        return write_keras_applications(graph, path, options.dtype)

    model = to_model(graph)
    notes: list[str] = []
    if options.dtype != "float32":
        _round_variables(model, options.dtype)
    if suffix == ".keras" or full_model:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras calls .h5 'legacy'; it is what was asked for
            model.save(str(path))
        kind = "Keras 3 native model" if suffix == ".keras" else "Keras HDF5 model (config + weights)"
        notes.append(f"{kind}: `import caffe2x.targets.keras` (registers the caffe2x layers), then "
                     f"`keras.models.load_model(path)`; input is NHWC")
        if options.dtype != "float32":
            notes.append(f"Keras holds the weights as float32 variables; their values are rounded to {options.dtype}")
        return notes
    if _is_native_weights_name(Path(options.destination) if options.destination else path):
        _save_native_weights(model, path)
        notes.append("Keras 3 native weights (.weights.h5): `model = caffe2x.to_keras(graph)`, then "
                     "`model.load_weights(path)`")
        if options.dtype != "float32":
            notes.append(f"Keras holds the weights as float32 variables; their values are rounded to {options.dtype}")
        return notes
    write_weights_h5(model, path, store_dtype=np.float16 if options.dtype == "float16" else np.float32)
    notes.append("Keras HDF5 weights, layers named after the Caffe layers: `model = caffe2x.to_keras(graph)`, "
                 "then `model.load_weights(path)` (input is NHWC)")
    if options.dtype == "float16":
        notes.append("weights stored as float16; Keras loads them into float32 variables")
    elif options.dtype == "bfloat16":
        notes.append("HDF5 has no bfloat16: weights rounded to bfloat16 and stored as float32")
    return notes


def _round_variables(model: keras.Model, dtype: str) -> None:
    for var in model.weights:
        var.assign(round_to(np.asarray(var.numpy()), dtype))


_NATIVE_WEIGHTS_NAME = re.compile(r"\.weights\.h5$")


def _is_native_weights_name(path: Path) -> bool:
    """``x.weights.h5`` (the destination's name, not the temporary one): Keras 3's ``load_weights`` reads names ending in ``.weights.h5``
    with its native weights loader, not the HDF5 one, so such a file must be in that format."""
    return _NATIVE_WEIGHTS_NAME.search(path.name) is not None


def _save_native_weights(model: keras.Model, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".caffe2x.", suffix=".weights.h5", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 __array__ notice from Keras itself
            model.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write_name_list(obj: h5py.Group, name: str, names: list[str]) -> None:
    """Store a list of names as Keras does: bytes array, split over name0, name1… past HDF5's limit."""
    data = np.array([n.encode("utf8") for n in names]) if names else np.array([], dtype="S1")
    chunks = 1
    while any(c.nbytes > _HDF5_OBJECT_HEADER_LIMIT for c in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
    else:
        for i, chunk in enumerate(np.array_split(data, chunks)):
            obj.attrs[f"{name}{i}"] = chunk


def _write_h5_layers(path: Path, layers: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """Keras' HDF5 weights layout: ``layer_names``; per layer ``weight_names`` and the datasets."""
    with h5py.File(path, "w") as f:
        _write_name_list(f, "layer_names", [name for name, _ in layers])
        f.attrs["backend"] = keras.backend.backend().encode("utf8")
        f.attrs["keras_version"] = str(keras.__version__).encode("utf8")
        for name, weights in layers:
            group = f.create_group(name)
            _write_name_list(group, "weight_names", [w for w, _ in weights])
            for wname, value in weights:
                group.create_dataset(wname, data=value)


def write_weights_h5(model: keras.Model, path: str | os.PathLike[str], store_dtype: Any = np.float32) -> None:
    """Write ``model``'s weights in the HDF5 layout Keras' ``load_weights`` reads for a ``.h5`` path.

    Layers are listed in ``model.layers`` order (the order Keras matches them in without ``by_name``),
    each with its variables in Keras' legacy order (trainable, then non-trainable) under their paths
    (``conv1/kernel``), so the datasets sit at ``<layer>/<layer>/<weight>``.
    """
    layers = []
    for layer in model.layers:
        weights = layer.trainable_weights + layer.non_trainable_weights
        layers.append((layer.name, [(w.path, np.asarray(w.numpy()).astype(store_dtype)) for w in weights]))
    _write_h5_layers(Path(path), layers)


# --------------------------------------------------------------------------- keras.applications profile
_RESNET_LAYER = re.compile(r"^res(\d)([a-z])(\d*)_branch(1|2a|2b|2c)$")
_RESNET_BRANCH = {"1": "0", "2a": "1", "2b": "2", "2c": "3"}
_RESNET_ARCH = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}
#: keras.applications ResNet's BatchNormalization epsilon
KERAS_APPLICATIONS_BN_EPS = 1.001e-5
#: standard deviation of the seeded input the profile's logit difference is measured on
MEASURE_INPUT_STD = 50.0


@dataclass
class _ResNetUnit:
    conv: Node
    bn: Node
    scale: Node


def _resnet_units(graph: Graph) -> tuple[str, dict[str, _ResNetUnit], Node]:
    """Map KaimingHe's ResNet layers to keras.applications names: ``{'conv2_block1_0': unit}``, arch, fc."""
    readers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)

    def follower(node: Node, op: str) -> Node:
        for n in readers.get(node.outputs[0], []):
            if n.op == op:
                return n
        raise Caffe2xError(f"keras-applications profile: layer {node.name!r} has no {op} after it "
                           f"(keras.applications ResNets need Conv+BatchNorm+Scale; do not fold BN)")

    units: dict[str, _ResNetUnit] = {}
    blocks: dict[int, set[int]] = {}
    fcs = [n for n in graph.nodes if n.op == "InnerProduct"]
    for node in graph.nodes:
        if node.op != "Convolution":
            continue
        if node.name == "conv1":
            prefix = "conv1"
        else:
            m = _RESNET_LAYER.match(node.name)
            if m is None:
                raise Caffe2xError(f"keras-applications profile: convolution {node.name!r} is not a KaimingHe "
                                   f"ResNet layer name (conv1, res<stage><block>_branch<1|2a|2b|2c>)")
            stage, letter, num, branch = int(m[1]), m[2], m[3], m[4]
            block = 1 if letter == "a" else (int(num) + 1 if num else ord(letter) - ord("a") + 1)
            blocks.setdefault(stage, set()).add(block)
            prefix = f"conv{stage}_block{block}_{_RESNET_BRANCH[branch]}"
        bn = follower(node, "BatchNorm")
        units[prefix] = _ResNetUnit(node, bn, follower(bn, "Scale"))
    counts = tuple(len(blocks.get(s, ())) for s in (2, 3, 4, 5))
    arch = _RESNET_ARCH.get(counts)
    if arch is None or len(fcs) != 1 or "conv1" not in units:
        raise Caffe2xError(f"keras-applications profile: not a KaimingHe ResNet-50/101/152 (blocks per stage "
                           f"{list(counts)}, {len(fcs)} InnerProduct layers)")
    return arch, units, fcs[0]


def _resnet_weights(graph: Graph, layer: keras.layers.Layer, units: dict[str, _ResNetUnit],
                    fc: Node) -> dict[str, np.ndarray]:
    """Values for one keras.applications layer's variables, by variable name."""

    def p(node: Node, role: str) -> np.ndarray:
        return np.asarray(graph.param(node, role), dtype=np.float32)

    name = layer.name
    if name == "predictions":
        # pool5 leaves (N, C, 1, 1): Caffe's C,H,W flattening is Keras' pooled (N, C) order
        return {"kernel": p(fc, "weight").T, "bias": p(fc, "bias") if "bias" in fc.params
                else np.zeros(fc.attrs["num_output"], np.float32)}
    prefix, _, kind = name.rpartition("_")
    unit = units.get(prefix)
    if unit is None:
        raise Caffe2xError(f"keras-applications profile: nothing in the Caffe net maps to keras layer {name!r}")
    if kind == "conv":
        c = unit.conv
        bias = p(c, "bias") if "bias" in c.params else np.zeros(c.attrs["num_output"], np.float32)
        return {"kernel": p(c, "weight").transpose(2, 3, 1, 0), "bias": bias}
    if kind == "bn":
        s = unit.scale
        gamma = p(s, "weight")
        beta = p(s, "bias") if "bias" in s.params else np.zeros_like(gamma)
        # var' + 1.001e-5 == var + Caffe's eps: the epsilon difference is compensated in the statistics
        var = p(unit.bn, "running_var").astype(np.float64) + (float(unit.bn.attrs["eps"]) - KERAS_APPLICATIONS_BN_EPS)
        return {"gamma": gamma, "beta": beta, "moving_mean": p(unit.bn, "running_mean"),
                "moving_variance": np.maximum(var, 0.0).astype(np.float32)}
    raise Caffe2xError(f"keras-applications profile: unexpected keras layer {name!r}")


def _keras_application(arch: str, graph: Graph, classes: int) -> keras.Model:
    (_, c, h, w), = graph.inputs.values()
    return getattr(keras.applications, arch)(weights=None, classifier_activation=None,
                                             input_shape=(h, w, c), classes=classes)


def write_keras_applications(graph: Graph, path: str | os.PathLike[str], dtype: str = "float32") -> list[str]:
    """Weights for ``keras.applications.ResNet50/101/152(weights=None)``, loadable with ``load_weights``.

    Conv+BatchNorm+Scale become Keras' ``conv*_conv`` (Caffe's missing biases as zeros) and
    ``conv*_bn`` (gamma/beta from Scale, statistics from BatchNorm); fc1000 becomes ``predictions``.
    The architectures differ (see the notes), so the file is loaded into a keras.applications model
    here and its logits are compared with the numpy reference on a seeded input; the measured
    difference is returned as a note, not hidden.
    """
    path = Path(path)
    if len(graph.inputs) != 1:
        raise Caffe2xError("keras-applications profile: the net must have one input")
    arch, units, fc = _resnet_units(graph)
    fc_in = graph.shapes[fc.inputs[0]]
    if len(fc_in) == 4 and fc_in[2:] != (1, 1):
        raise Caffe2xError(f"keras-applications profile: {fc.name!r} reads a {fc_in[2]}x{fc_in[3]} map; "
                           f"keras.applications pools globally to 1x1 (use the net's own input size)")
    model = _keras_application(arch, graph, fc.attrs["num_output"])
    store = np.float16 if dtype == "float16" else np.float32
    layers = []
    used = set()
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights
        entries = []
        if variables:
            values = _resnet_weights(graph, layer, units, fc)
            for v in variables:
                value = values[v.name]
                if tuple(v.shape) != value.shape:
                    raise Caffe2xError(f"keras-applications profile: {v.path} has shape {list(value.shape)} "
                                       f"from Caffe, keras.applications expects {list(v.shape)}")
                entries.append((v.path, round_to(value, dtype).astype(store)))
            used.add(layer.name.rpartition("_")[0])
        layers.append((layer.name, entries))
    unmapped = sorted(set(units) - used)
    if unmapped:
        raise Caffe2xError(f"keras-applications profile: Caffe layers {unmapped[:3]} have no keras.applications "
                           f"counterpart in {arch}")
    _write_h5_layers(path, layers)

    # measure: load the file with Keras' own loader into the keras.applications model, compare logits
    model.load_weights(str(path))
    (blob, shape), = graph.inputs.items()
    # std 50: about what a mean-subtracted BGR image in [0, 255] looks like, the input these nets expect
    x = (np.random.default_rng(0).standard_normal((1, *shape[1:])) * MEASURE_INPUT_STD).astype(np.float32)
    fc_blob = graph.blob_name(fc.outputs[0])
    exact = np.asarray(reference_run(graph, x, outputs=fc_blob))
    got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    err = max_rel_error(got, exact)
    top1 = "agrees" if int(got.argmax()) == int(exact.argmax()) else "differs"
    return [
        f"keras-applications profile: weights for keras.applications.{arch}(weights=None, "
        f"classifier_activation=None for logits), load with model.load_weights(path); layer names "
        f"conv1_conv, conv2_block1_0_conv (shortcut), ..., predictions",
        f"keras-applications {arch} logits differ from Caffe's by {err:.2e} max relative error "
        f"(max|a-b|/max|b|, top-1 {top1}), measured by loading this file with Keras' load_weights and "
        f"running seeded white noise of std {MEASURE_INPUT_STD:g} (a hard case for pool1's one-pixel window "
        f"shift)",
        "architecture differences: keras.applications pool1 is ZeroPadding2D(1) + MaxPooling2D 3x3/2 "
        "(zero padding, floor rounding) where Caffe pools 3x3/2 with no padding and rounds up (same 56x56, "
        "windows shifted by one pixel); BatchNormalization epsilon 1.001e-5 vs Caffe's 1e-5 (compensated in "
        "moving_variance); Caffe's bias-free convolutions get zero biases; the input is Caffe's: BGR, "
        "mean-subtracted, 0-255 (keras.applications.resnet50.preprocess_input does this from RGB with "
        "per-channel means; Caffe's training used a per-pixel mean image)",
    ]
