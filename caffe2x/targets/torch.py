"""PyTorch target: the graph as a real ``torch.nn.Module``, its weights as a ``.pt`` state_dict, optional
standalone model code, and the ``torchvision`` naming profile for KaimingHe's ResNets.

The module (:func:`to_module`)
------------------------------
One submodule per Caffe layer, registered under the layer's name, so ``state_dict()`` keys are the
graph's tensor keys (``conv1.weight``, ``bn_conv1.running_mean``, ``fc1000.bias``). ``torch.nn`` classes
are used where they compute exactly what Caffe computes (Conv2d, ReLU/LeakyReLU, Sigmoid, Tanh, Softmax,
Flatten, Dropout); small modules defined here cover the rest: :class:`CaffePooling` (ceil-mode output
size with Caffe's drop-last-window rule, MAX padded with -inf, AVE divided by Caffe's clipped window
size), :class:`CaffeBatchNorm` (always the stored statistics, eps added to the variance, no affine part,
no ``num_batches_tracked``), :class:`CaffeScale`, :class:`CaffeInnerProduct` (``nn.Linear`` that flattens
from ``axis`` in C, H, W order), :class:`CaffeEltwise`, :class:`CaffeConcat` and :class:`CaffeLRN`.
Those helper classes depend on nothing but torch and :func:`~caffe2x.ir.pool_output_size`, because
``--emit-code`` copies their source verbatim into the generated ``model.py``: the generated net and this
module run the very same code.

Module naming rule (used identically by :func:`to_module`, :func:`write` and the generated code)
----------------------------------------------------------------------------------------------------
A layer whose name is already a usable attribute name keeps it. Any other layer name has every character
outside ``[A-Za-z0-9_]`` replaced by ``_`` (``inception_3a/1x1`` -> ``inception_3a_1x1``), ``layer_``
prepended if it is empty or starts with a digit, ``_`` appended if it is a Python keyword or an attribute
``nn.Module`` already has (``forward``, ``eval``, ``type``, …), and ``_2``, ``_3``, … appended if an
earlier layer already took the result. Layers are named in graph order, names that need no change first,
so a valid name is never displaced by a sanitised one.

The torchvision profile (``profile="torchvision"``)
---------------------------------------------------
Writes KaimingHe's ResNet-50/101/152 under the keys of ``torchvision.models.resnet50/101/152()`` so that
``load_state_dict(strict=True)`` succeeds: ``conv1``, ``bn1``, ``layer{1-4}.{i}.conv{1,2,3}``/``bn{1,2,3}``,
``layer{1-4}.0.downsample.{0,1}``, ``fc``. Caffe's BatchNorm + Scale pair becomes one torchvision
BatchNorm2d (weight = gamma, bias = beta, running statistics; a Caffe eps other than torchvision's 1e-5
is moved into ``running_var``); a convolution bias, which torchvision's convolutions lack, is folded
exactly into the following BatchNorm (``running_mean -= bias``; conv1 of ResNet-50 has one). Those steps
are exact. The architectures are not the same, so the torchvision model computes something else:

* Downsampling: Caffe's ResNet (v1) strides the first 1x1 convolution of a block (``res3a_branch2a``
  stride 2); torchvision (v1.5) strides the 3x3 (``layer2.0.conv2``) and keeps ``conv1`` at stride 1.
  The weights have the same shapes, so they load, but each strided block sees different pixels.
* ``pool1``: Caffe's MAX 3x3 stride 2 has pad 0 and rounds up; torchvision's ``maxpool`` has pad 1 and
  rounds down. Same 56x56 output at 224x224, windows shifted by one pixel.
* ``pool5``: Caffe's AVE 7x7 is torchvision's ``AdaptiveAvgPool2d(1)`` only at a 224x224 input.
* Output: the Caffe net ends in ``prob`` (Softmax); torchvision returns the ``fc`` logits.
* Input convention is unchanged by the profile: the weights still expect Caffe's preprocessing
  (BGR channel order, 0-255 pixels minus the mean), not torchvision's RGB 0-1 normalised input.

Because of the first two the result cannot be exact; :func:`write` therefore runs the torchvision
architecture (reimplemented here in plain torch, torchvision itself is not needed) on a seeded input and
reports the measured logit difference against the numpy reference in its notes.
"""
from __future__ import annotations

import functools
import inspect
import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Caffe2xError, UnsupportedLayerError
from ..ir import Graph, Node, pool_output_size
from ..registry import Registry
from . import WriteOptions

SUFFIXES = (".pt", ".pth")

#: ``WriteOptions.dtype`` -> torch dtype of the floating-point tensors written
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# =========================================================================== Caffe layers as modules
# Everything in this section is copied verbatim into generated model code (see torch_codegen), so it
# may use only torch, nn, F, math and pool_output_size.

class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm at inference: ``(x - mean) / sqrt(var + eps)``, per channel (axis 1).

    Caffe keeps the affine part in a separate Scale layer, so there is no weight or bias here, and the
    stored statistics are always used (Caffe's ``use_global_stats``), even in ``train()`` mode.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, eps={self.eps}"


class CaffeScale(nn.Module):
    """Caffe's Scale (one-input form): multiply by ``weight`` and add ``bias``, both shaped like the
    input's dimensions ``axis .. axis + weight.dim()`` and broadcast over the others."""

    def __init__(self, shape: tuple[int, ...], axis: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape))
        if bias:
            self.bias = nn.Parameter(torch.zeros(shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1,) * self.axis + tuple(self.weight.shape) + (1,) * (x.dim() - self.axis - self.weight.dim())
        y = x * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, axis={self.axis}, bias={self.bias is not None}"


class CaffePooling(nn.Module):
    """Caffe's Pooling, which no torch pooling call reproduces in general.

    Output size rounds up (``ceil``), then drops a last window that would start in the padding. MAX
    pads with -inf, so padding never wins over negative values. AVE sums the window and divides by
    Caffe's divisor: the window clipped to ``[-pad, size + pad)``, i.e. padding counts but the ceil-mode
    overhang beyond it does not. ``global_pooling`` pools the whole plane. Sizes are taken from the
    input at run time, so the module works at any input size, as a reshaped Caffe net does.
    """

    def __init__(self, method: str = "max", kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 pad: tuple[int, int] = (0, 0), ceil: bool = True, global_pooling: bool = False) -> None:
        super().__init__()
        self.method = method
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.ceil = ceil
        self.global_pooling = global_pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if self.global_pooling:
            (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
        else:
            (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        oh = pool_output_size(h, kh, sh, ph, self.ceil)
        ow = pool_output_size(w, kw, sw, pw, self.ceil)
        # right/bottom padding so that exactly oh x ow windows fit
        rh = max(0, (oh - 1) * sh + kh - h - ph)
        rw = max(0, (ow - 1) * sw + kw - w - pw)
        if self.method == "max":
            if ph or pw or rh or rw:
                x = F.pad(x, (pw, rw, ph, rh), value=float("-inf"))
            return F.max_pool2d(x, (kh, kw), (sh, sw))[:, :, :oh, :ow]
        if ph or pw or rh or rw:
            x = F.pad(x, (pw, rw, ph, rh))
        total = F.avg_pool2d(x, (kh, kw), (sh, sw), divisor_override=1)[:, :, :oh, :ow]
        div_h = self._window_sizes(oh, kh, sh, ph, h, x)
        div_w = self._window_sizes(ow, kw, sw, pw, w, x)
        return total / (div_h.view(-1, 1) * div_w.view(1, -1))

    @staticmethod
    def _window_sizes(out: int, kernel: int, stride: int, pad: int, size: int, like: torch.Tensor) -> torch.Tensor:
        """Caffe's AVE divisor along one axis: ``min(start + kernel, size + pad) - start``."""
        starts = torch.arange(out, device=like.device) * stride - pad
        return (torch.clamp(starts + kernel, max=size + pad) - starts).to(like.dtype)

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method!r}, global_pooling=True"
        return (f"{self.method!r}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"ceil={self.ceil}")


class CaffeInnerProduct(nn.Linear):
    """Caffe's InnerProduct: ``nn.Linear`` applied after flattening dimensions ``axis..`` in C, H, W
    order (Caffe's memory order, which is also torch's)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1) -> None:
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(self.axis), self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", axis={self.axis}"


class CaffeEltwise(nn.Module):
    """Caffe's Eltwise over any number of inputs: ``sum`` (each input times its ``coeff``), ``prod``
    or ``max``."""

    def __init__(self, operation: str = "sum", coeff: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.operation = operation
        self.coeff = coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "sum":
            coeff = self.coeff or (1.0,) * len(xs)
            y = xs[0] if coeff[0] == 1 else xs[0] * coeff[0]
            for c, x in zip(coeff[1:], xs[1:]):
                y = y + (x if c == 1 else x * c)
            return y
        y = xs[0]
        for x in xs[1:]:
            y = y * x if self.operation == "prod" else torch.maximum(y, x)
        return y

    def extra_repr(self) -> str:
        return f"{self.operation!r}" + (f", coeff={self.coeff}" if self.operation == "sum" else "")


class CaffeConcat(nn.Module):
    """Caffe's Concat along ``axis``."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class CaffeLRN(nn.Module):
    """Caffe's LRN, ``y = x * scale ** -beta``.

    ACROSS_CHANNELS: ``scale = k + alpha / size * (sum of x^2 over size neighbouring channels)``.
    WITHIN_CHANNEL: ``scale = 1 + alpha / size^2 * (sum of x^2 over a size x size window, zero padded)``;
    Caffe builds it from AVE pooling and a Power layer with shift 1, so ``k`` plays no part there.
    (``nn.LocalResponseNorm`` differs: no within-channel mode, and it averages over a clipped window.)
    """

    def __init__(self, size: int = 5, alpha: float = 1.0, beta: float = 0.75, k: float = 1.0,
                 region: str = "across") -> None:
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        sq = x * x
        if self.region == "across":
            padded = F.pad(sq, (0, 0, 0, 0, half, self.size - 1 - half))
            channels = x.shape[1]
            window = padded[:, 0:channels]
            for i in range(1, self.size):
                window = window + padded[:, i:i + channels]
            scale = self.k + (self.alpha / self.size) * window
        else:
            padded = F.pad(sq, (half, half, half, half))
            window = F.avg_pool2d(padded, self.size, 1, divisor_override=1)
            scale = 1.0 + (self.alpha / (self.size * self.size)) * window
        return x * torch.pow(scale, -self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, region={self.region!r}"


#: helper classes in the order generated code defines them
HELPER_CLASSES: tuple[type[nn.Module], ...] = (CaffeBatchNorm, CaffeScale, CaffePooling, CaffeInnerProduct,
                                               CaffeEltwise, CaffeConcat, CaffeLRN)


# =========================================================================== one builder per op
@dataclass
class LayerSpec:
    """How to make one layer's module: a class, its constructor arguments (plain Python values, so
    generated code can spell them out) and the tensors to load into it, keyed by the module's own
    state_dict names (the node's param roles)."""

    cls: type[nn.Module]
    kwargs: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def instantiate(self, layer: str) -> nn.Module:
        """The module holding copies of the tensors (built on the meta device and then given the
        tensors, which skips a random initialisation that would be overwritten anyway)."""
        with torch.device("meta"):
            module = self.cls(**self.kwargs)
        state = {role: torch.tensor(np.asarray(arr, dtype=np.float32)) for role, arr in self.tensors.items()}
        try:
            module.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            raise Caffe2xError(f"layer {layer!r}: its tensors do not fit {self.cls.__name__}: "
                               f"{lines[-1].strip() if lines else exc}") from None
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            raise Caffe2xError(f"layer {layer!r}: {self.cls.__name__} has state the graph does not provide")
        return module


Builder = Callable[[Node, Graph], LayerSpec]
#: op -> builder; supporting a new op is registering one function here
BUILDERS: Registry[Builder] = Registry("op (torch target)")
builder = BUILDERS.register


def _pair(v: Sequence[int]) -> tuple[int, int]:
    return int(v[0]), int(v[1])


def _tensors(node: Node, graph: Graph) -> dict[str, np.ndarray]:
    return {role: graph.tensors[key] for role, key in node.params.items()}


@builder("Convolution")
def _conv(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    weight = graph.param(node, "weight")
    return LayerSpec(nn.Conv2d, {
        "in_channels": int(weight.shape[1]) * int(a["group"]), "out_channels": int(a["num_output"]),
        "kernel_size": _pair(a["kernel"]), "stride": _pair(a["stride"]), "padding": _pair(a["pad"]),
        "dilation": _pair(a["dilation"]), "groups": int(a["group"]), "bias": "bias" in node.params,
    }, _tensors(node, graph))


@builder("Deconvolution")
def _deconv(node: Node, graph: Graph) -> LayerSpec:
    """``nn.ConvTranspose2d`` is Caffe's deconvolution: same weight layout (C_in, C_out/g, kh, kw), same
    output size ``s*(H-1) + d*(k-1) + 1 - 2p`` with no output padding."""
    a = node.attrs
    weight = graph.param(node, "weight")
    return LayerSpec(nn.ConvTranspose2d, {
        "in_channels": int(weight.shape[0]), "out_channels": int(a["num_output"]),
        "kernel_size": _pair(a["kernel"]), "stride": _pair(a["stride"]), "padding": _pair(a["pad"]),
        "dilation": _pair(a["dilation"]), "groups": int(a["group"]), "bias": "bias" in node.params,
    }, _tensors(node, graph))


@builder("BatchNorm")
def _batchnorm(node: Node, graph: Graph) -> LayerSpec:
    c = int(graph.param(node, "running_mean").shape[0])
    return LayerSpec(CaffeBatchNorm, {"num_features": c, "eps": float(node.attrs["eps"])}, _tensors(node, graph))


@builder("Scale")
def _scale(node: Node, graph: Graph) -> LayerSpec:
    shape = tuple(int(d) for d in graph.param(node, "weight").shape)
    return LayerSpec(CaffeScale, {"shape": shape, "axis": int(node.attrs["axis"]), "bias": "bias" in node.params},
                     _tensors(node, graph))


@builder("ReLU")
def _relu(node: Node, graph: Graph) -> LayerSpec:
    slope = float(node.attrs.get("negative_slope", 0.0))
    if slope == 0.0:
        return LayerSpec(nn.ReLU, {})
    return LayerSpec(nn.LeakyReLU, {"negative_slope": slope})


@builder("ELU")
def _elu(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.ELU, {"alpha": float(node.attrs["alpha"])})


@builder("PReLU")
def _prelu(node: Node, graph: Graph) -> LayerSpec:
    """``nn.PReLU`` holds Caffe's slopes as ``weight`` (C,) (or (1,) when channel_shared), per channel on dim 1."""
    slopes = graph.param(node, "weight")
    return LayerSpec(nn.PReLU, {"num_parameters": int(slopes.size)}, _tensors(node, graph))


@builder("Sigmoid")
def _sigmoid(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Sigmoid, {})


@builder("TanH")
def _tanh(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Tanh, {})


@builder("Dropout")
def _dropout(node: Node, graph: Graph) -> LayerSpec:
    # identity in eval() mode (as the module is returned); drops and rescales like Caffe in train()
    ratio = float(node.attrs.get("ratio", 0.5))
    return LayerSpec(nn.Dropout, {"p": ratio if 0.0 <= ratio <= 1.0 else 0.0})


@builder("Pooling")
def _pooling(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffePooling, {
        "method": str(a["method"]), "kernel": _pair(a["kernel"]), "stride": _pair(a["stride"]),
        "pad": _pair(a["pad"]), "ceil": bool(a["ceil"]), "global_pooling": bool(a["global_pooling"]),
    })


@builder("Eltwise")
def _eltwise(node: Node, graph: Graph) -> LayerSpec:
    operation = str(node.attrs["operation"])
    if operation not in ("sum", "prod", "max"):
        raise UnsupportedLayerError(node.name, f"Eltwise {operation}", "operation")
    coeff = tuple(float(c) for c in node.attrs.get("coeff") or ()) if operation == "sum" else ()
    if coeff and len(coeff) != len(node.inputs):
        raise Caffe2xError(f"layer {node.name!r} (Eltwise) has {len(coeff)} coeff for {len(node.inputs)} inputs")
    return LayerSpec(CaffeEltwise, {"operation": operation, "coeff": coeff})


@builder("InnerProduct")
def _inner_product(node: Node, graph: Graph) -> LayerSpec:
    weight = graph.param(node, "weight")
    return LayerSpec(CaffeInnerProduct, {
        "in_features": int(weight.shape[1]), "out_features": int(weight.shape[0]),
        "bias": "bias" in node.params, "axis": int(node.attrs["axis"]),
    }, _tensors(node, graph))


@builder("Softmax")
def _softmax(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Softmax, {"dim": int(node.attrs["axis"])})


@builder("LRN")
def _lrn(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeLRN, {"size": int(a["size"]), "alpha": float(a["alpha"]), "beta": float(a["beta"]),
                                "k": float(a["k"]), "region": str(a["region"])})


@builder("Concat")
def _concat(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(CaffeConcat, {"axis": int(node.attrs["axis"])})


@builder("Flatten")
def _flatten(node: Node, graph: Graph) -> LayerSpec:
    return LayerSpec(nn.Flatten, {"start_dim": int(node.attrs["axis"]), "end_dim": int(node.attrs["end_axis"])})


def layer_spec(node: Node, graph: Graph) -> LayerSpec:
    """The :class:`LayerSpec` of one node (raises for an op no builder handles)."""
    return BUILDERS.lookup(node.op, node.name)(node, graph)


# =========================================================================== naming
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@functools.lru_cache(maxsize=1)
def _reserved_names() -> frozenset[str]:
    """Names a layer module may not take: attributes of nn.Module / CaffeNet and Python keywords."""
    return frozenset(dir(nn.Module())) | frozenset(dir(CaffeNet)) | frozenset(CaffeNet.INSTANCE_ATTRS) \
        | frozenset(keyword.kwlist)


def sanitize(name: str) -> str:
    """A layer name made into an attribute name (without deduplication); see the module docstring."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not clean or clean[0].isdigit():
        clean = "layer_" + clean
    if clean in _reserved_names():
        clean += "_"
    return clean


def node_module_names(graph: Graph) -> list[str]:
    """The submodule name of each node, in graph order, by the documented rule. Names that need no
    change are given out first, so ``a_b`` keeps its name even when an earlier ``a/b`` sanitises to it;
    a repeated Caffe name (which the graph does not forbid) is deduplicated like any collision."""
    reserved = _reserved_names()
    names: list[str | None] = [None] * len(graph.nodes)
    taken: set[str] = set()
    for i, node in enumerate(graph.nodes):  # pass 1: names usable as they are
        if _IDENTIFIER.match(node.name) and node.name not in reserved and node.name not in taken:
            names[i] = node.name
            taken.add(node.name)
    for i, node in enumerate(graph.nodes):  # pass 2: everything else, sanitised and deduplicated
        if names[i] is not None:
            continue
        base = sanitize(node.name)
        candidate, k = base, 2
        while candidate in taken or candidate in reserved:
            candidate, k = f"{base}_{k}", k + 1
        names[i] = candidate
        taken.add(candidate)
    return [n for n in names if n is not None]


def module_names(graph: Graph) -> dict[str, str]:
    """Caffe layer name -> submodule name (for a repeated Caffe name: its first layer's)."""
    result: dict[str, str] = {}
    for node, name in zip(graph.nodes, node_module_names(graph)):
        result.setdefault(node.name, name)
    return result


# =========================================================================== the module
@dataclass(frozen=True)
class Step:
    """One layer of the forward pass: which submodule, which values in and out, which values to drop
    afterwards (nothing reads them any more), so memory stays at a few live activations."""

    module: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    release: tuple[str, ...]


class CaffeNet(nn.Module):
    """A Caffe net as a ``torch.nn.Module`` (see :func:`to_module`).

    ``forward`` takes the input as one tensor (single-input nets), as tensors in ``input_names`` order,
    as keywords, or as one dict by input name; it returns the single output blob as a tensor, or a dict
    keyed by Caffe blob name when there are several.
    """

    #: plain attributes set in __init__ (layer modules may not take these names)
    INSTANCE_ATTRS = ("input_names", "output_names", "steps", "output_values", "single_output", "caffe_names")

    def __init__(self, layers: Sequence[tuple[str, nn.Module]], steps: Sequence[Step], input_names: Sequence[str],
                 output_names: Sequence[str], output_values: Sequence[str], single_output: bool,
                 caffe_names: Mapping[str, str]) -> None:
        super().__init__()
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.output_values = tuple(output_values)
        self.single_output = single_output
        self.steps = tuple(steps)
        self.caffe_names = dict(caffe_names)  # module name -> Caffe layer name
        for name, module in layers:
            self.add_module(name, module)

    def _feeds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = dict(args[0])
        else:
            if len(args) > len(self.input_names):
                raise Caffe2xError(f"the net takes {len(self.input_names)} input(s) "
                                   f"({', '.join(self.input_names)}), got {len(args)}")
            given = dict(zip(self.input_names, args))
        given.update(kwargs)
        for name in self.input_names:
            if name not in given:
                raise Caffe2xError(f"no value given for input {name!r}")
        unknown = [k for k in given if k not in self.input_names]
        if unknown:
            raise Caffe2xError(f"the net has no input named {unknown[0]!r} (inputs: {', '.join(self.input_names)})")
        return given

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        values = self._feeds(args, kwargs)
        for step in self.steps:
            out = getattr(self, step.module)(*[values[v] for v in step.inputs])
            if len(step.outputs) == 1:
                values[step.outputs[0]] = out
            else:
                values.update(zip(step.outputs, out))
            for v in step.release:
                del values[v]
        if self.single_output:
            return values[self.output_values[0]]
        return {name: values[v] for name, v in zip(self.output_names, self.output_values)}


def _plan(graph: Graph, modules: Sequence[str], keep: set[str]) -> list[Step]:
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = i
    steps = []
    for i, (node, name) in enumerate(zip(graph.nodes, modules)):
        release = tuple(dict.fromkeys(v for v in node.inputs if last_use[v] == i and v not in keep))
        # a value produced but never read (a side output) is dropped right away
        unused = tuple(v for v in node.outputs if v not in last_use and v not in keep)
        steps.append(Step(name, tuple(node.inputs), tuple(node.outputs), release + unused))
    return steps


def resolve_outputs(graph: Graph, outputs: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """Caffe blob names to return, and whether the result is a single tensor (``reference.run``'s rule)."""
    from ..reference import resolve_outputs as _resolve

    names = _resolve(graph, outputs)
    single = isinstance(outputs, str) or (outputs is None and len(names) == 1)
    return names, single


def to_module(graph: Graph, outputs: str | Sequence[str] | None = None) -> CaffeNet:
    """A ``torch.nn.Module`` computing ``graph`` with Caffe's semantics, in ``eval()`` mode.

    Input is NCHW (float32, or whatever dtype the module is cast to). ``outputs`` names the Caffe
    blobs to return (default: the net's outputs); one blob gives a tensor, several a dict by blob name.
    Its ``state_dict()`` has exactly the keys :func:`write` saves.
    """
    names = node_module_names(graph)
    out_names, single = resolve_outputs(graph, outputs)
    out_values = [graph.value(n) for n in out_names]
    layers = [(name, layer_spec(node, graph).instantiate(node.name)) for node, name in zip(graph.nodes, names)]
    steps = _plan(graph, names, set(out_values))
    net = CaffeNet(layers, steps, list(graph.inputs), out_names, out_values, single,
                   {name: node.name for node, name in zip(graph.nodes, names)})
    return net.eval()


# =========================================================================== writing .pt
def _cast(state: Mapping[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    if dtype not in DTYPES:
        raise Caffe2xError(f"unsupported dtype {dtype!r} for the torch target; choose {', '.join(DTYPES)}")
    target = DTYPES[dtype]
    return {k: (v.detach().to(target) if v.is_floating_point() else v.detach()).contiguous().clone()
            for k, v in state.items()}


def state_dict(graph: Graph) -> dict[str, torch.Tensor]:
    """The float32 state_dict :func:`write` saves without a profile (= ``to_module(graph).state_dict()``)."""
    return dict(to_module(graph).state_dict())


def final_path(path: Path, options: WriteOptions) -> Path:
    """The name the written file will finally have: ``write`` receives a temporary name, the caller
    (:func:`caffe2x.convert.write`) says where it goes in ``options.destination``."""
    return Path(options.destination) if options.destination else path


def code_path(path: Path, options: WriteOptions) -> Path:
    """Where ``emit_code`` puts the generated model code: ``options.extra['emit_code']`` when it is a
    path, else ``<stem>_model.py`` next to the weights (``resnet50.pt`` -> ``resnet50_model.py``), the
    stem made importable as a module name."""
    emit = options.extra.get("emit_code")
    if isinstance(emit, (str, Path)) and str(emit).endswith(".py"):
        return Path(emit)
    dest = final_path(path, options)
    stem = re.sub(r"[^A-Za-z0-9_]", "_", dest.stem)  # importable: resnet-50.pt -> resnet_50_model.py
    return dest.with_name(("model_" if stem[:1].isdigit() else "") + stem + "_model.py")


def write(graph: Graph, path: str | Path, options: WriteOptions) -> list[str]:
    """Save the state_dict as a flat ``{key: tensor}`` dict with ``torch.save``.

    ``torch.load(path, weights_only=True)`` reads it; it loads with ``strict=True`` into
    ``to_module(graph)`` (no profile), or into ``torchvision.models.resnetNN()`` (``profile='torchvision'``).
    ``options.extra['emit_code']`` also writes standalone model code (see :func:`code_path`).
    """
    path = Path(path)
    notes: list[str] = []
    if options.extra.get("emit_code") and options.profile is not None:
        raise Caffe2xError("emit_code writes the Caffe-architecture net, whose keys are the Caffe layer "
                           f"names; it cannot be combined with profile {options.profile!r}")
    if options.profile is None:
        state = state_dict(graph)
        renamed = {n.name: m for n, m in zip(graph.nodes, node_module_names(graph)) if n.name != m}
        notes.append(f"{len(state)} tensors keyed by Caffe layer name; load with "
                     f"caffe2x.to_torch(graph).load_state_dict(torch.load(path, weights_only=True))")
        if renamed:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(renamed.items())[:3])
            more = f" and {len(renamed) - 3} more" if len(renamed) > 3 else ""
            notes.append(f"{len(renamed)} layer name(s) are not valid module names and were renamed: {shown}{more}")
    elif options.profile == "torchvision":
        profile = torchvision_profile(graph)
        state = profile.state
        args = "" if profile.num_classes == 1000 else f"num_classes={profile.num_classes}"
        notes.append(f"torchvision profile: keys load into torchvision.models.{profile.constructor}({args}) "
                     f"with strict=True")
        notes.append(profile.measure(graph))
    else:
        raise Caffe2xError(f"unknown profile {options.profile!r} for the torch target (available: torchvision)")
    torch.save(_cast(state, options.dtype), path)
    if options.extra.get("emit_code"):
        from ..fileio import atomic_output
        from .torch_codegen import generate

        target = code_path(path, options)
        weights = final_path(path, options)
        source = generate(graph, weights_name=weights.name, module_name=target.stem)
        with atomic_output(target) as tmp:
            tmp.write_text(source, encoding="utf-8")
        notes.append(f"model code written to {target}: from {target.stem} import Net; net = Net(); "
                     f"net.load_state_dict(torch.load({weights.name!r}, weights_only=True))")
    return notes


# =========================================================================== torchvision profile
#: torchvision ResNet constructor by blocks per stage
RESNET_LAYOUTS: dict[tuple[int, ...], str] = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101",
                                              (3, 8, 36, 3): "resnet152"}
_BLOCK_CONV = re.compile(r"res(?P<stage>[2-5])(?P<block>[a-z][0-9]*)_branch(?P<branch>1|2a|2b|2c)\Z")
_BRANCH_KEYS = {"2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3"),
                "1": ("downsample.0", "downsample.1")}
TORCHVISION_BN_EPS = 1e-5


class _TVBottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride sits on the 3x3 ``conv2``)."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                        nn.BatchNorm2d(planes * 4)) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class TorchvisionResNet(nn.Module):
    """The architecture of ``torchvision.models.resnet50/101/152`` in plain torch (same submodule names,
    hence the same state_dict keys), used to check the profile's keys and measure its logits."""

    def __init__(self, layers: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            stage = []
            for b in range(blocks):
                stage.append(_TVBottleneck(inplanes, planes, stride if b == 0 else 1, downsample=b == 0))
                inplanes = planes * 4
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _not_resnet(why: str) -> Caffe2xError:
    return Caffe2xError(f"profile 'torchvision' needs KaimingHe's ResNet-50/101/152 layer naming: {why}")


@dataclass
class TorchvisionProfile:
    """The profile's state_dict, with what is needed to describe and measure it."""

    state: dict[str, torch.Tensor]
    layers: tuple[int, ...]
    num_classes: int
    logits: str                      # value name of the InnerProduct output (the logits)

    @property
    def constructor(self) -> str:
        return RESNET_LAYOUTS[self.layers]

    def module(self) -> TorchvisionResNet:
        with torch.device("meta"):
            net = TorchvisionResNet(self.layers, self.num_classes)
        net.load_state_dict(self.state, strict=True, assign=True)
        return net.eval()

    def measure(self, graph: Graph, seed: int = 0) -> str:
        """Run the torchvision architecture and the numpy reference on one seeded image-like input
        (uniform 0-255 pixels minus the ImageNet BGR means, Caffe's preprocessing); describe the gap."""
        from ..reference import run

        shape = (1, *graph.inputs[next(iter(graph.inputs))][1:])
        rng = np.random.default_rng(seed)
        x = (rng.uniform(0, 255, shape) - np.array([103.94, 116.78, 123.68]).reshape(1, 3, 1, 1)).astype(np.float32)
        ref = np.asarray(run(graph, x, outputs=self.logits), dtype=np.float64)
        with torch.no_grad():
            got = self.module()(torch.from_numpy(x)).double().numpy()
        diff = float(np.abs(got - ref).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-30)
        top1 = "agrees" if int(got.argmax()) == int(ref.argmax()) else "differs"
        return (f"torchvision profile is not exact (v1.5 strides the 3x3 conv, pool1 pads 1 and rounds down): "
                f"on a seeded input, logits differ from Caffe's by max |d| = {diff:.4g} "
                f"(relative {rel:.3g}); top-1 class {top1}")


def _affine_after(conv: Node, graph: Graph, consumers: Mapping[str, list[Node]]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision BatchNorm (weight, bias, running_mean, running_var) equal to what follows ``conv``
    in Caffe: its bias, an optional BatchNorm, an optional per-channel Scale. All steps are exact:
    ``((z + cb) - m) / sqrt(v + eps) * g + b == (z - (m - cb)) / sqrt((v + eps - 1e-5) + 1e-5) * g + b``."""
    channels = int(conv.attrs["num_output"])
    cb = graph.param(conv, "bias").astype(np.float64) if "bias" in conv.params else np.zeros(channels)
    mean, var = np.zeros(channels), np.full(channels, 1.0 - TORCHVISION_BN_EPS)
    gamma, beta = np.ones(channels), np.zeros(channels)
    value = conv.outputs[0]
    nxt = consumers.get(value, [])
    if len(nxt) == 1 and nxt[0].op == "BatchNorm":
        bn = nxt[0]
        mean = graph.param(bn, "running_mean").astype(np.float64)
        var = graph.param(bn, "running_var").astype(np.float64) + float(bn.attrs["eps"]) - TORCHVISION_BN_EPS
        value = bn.outputs[0]
        nxt = consumers.get(value, [])
    if len(nxt) == 1 and nxt[0].op == "Scale":
        sc = nxt[0]
        if sc.attrs["axis"] != 1 or graph.param(sc, "weight").shape != (channels,):
            raise _not_resnet(f"Scale layer {sc.name!r} is not per-channel")
        gamma = graph.param(sc, "weight").astype(np.float64)
        beta = graph.param(sc, "bias").astype(np.float64) if "bias" in sc.params else beta
    return gamma, beta, mean - cb, np.maximum(var, 0.0)


def torchvision_profile(graph: Graph) -> TorchvisionProfile:
    """Map a KaimingHe ResNet-50/101/152 graph onto torchvision's state_dict keys (see module docstring).

    Recognition is by KaimingHe's layer names (``conv1``, ``res<stage><block>_branch<1|2a|2b|2c>``, one
    InnerProduct) and then checked against torchvision's exact key/shape table; anything else raises
    :class:`Caffe2xError` naming what does not fit.
    """
    consumers: dict[str, list[Node]] = {}
    for n in graph.nodes:
        for v in dict.fromkeys(n.inputs):
            consumers.setdefault(v, []).append(n)
    convs = [n for n in graph.nodes if n.op == "Convolution"]
    if not any(n.name == "conv1" for n in convs):
        raise _not_resnet("no Convolution layer named 'conv1'")
    stages: dict[int, dict[str, dict[str, Node]]] = {}
    for n in convs:
        if n.name == "conv1":
            continue
        m = _BLOCK_CONV.match(n.name)
        if m is None:
            raise _not_resnet(f"convolution {n.name!r} is not named res<stage><block>_branch<1|2a|2b|2c>")
        stages.setdefault(int(m["stage"]), {}).setdefault(m["block"], {})[m["branch"]] = n
    if sorted(stages) != [2, 3, 4, 5]:
        raise _not_resnet(f"found stages {sorted(stages)}, expected res2..res5")
    layers = tuple(len(stages[s]) for s in (2, 3, 4, 5))
    if layers not in RESNET_LAYOUTS:
        raise _not_resnet(f"blocks per stage {list(layers)} are none of ResNet-50/101/152's "
                          f"{', '.join(str(list(k)) for k in RESNET_LAYOUTS)}")
    ips = [n for n in graph.nodes if n.op == "InnerProduct"]
    if len(ips) != 1:
        raise _not_resnet(f"expected one InnerProduct (fc1000), found {len(ips)}")
    fc = ips[0]
    pools = [n for n in graph.nodes if n.op == "Pooling"]
    if len(pools) != 2 or pools[0].attrs["method"] != "max" or pools[1].attrs["method"] != "ave":
        raise _not_resnet("expected a MAX pool1 and an AVE pool5")

    tensors: dict[str, np.ndarray] = {}

    def put_conv_bn(conv: Node, conv_key: str, bn_key: str) -> None:
        tensors[f"{conv_key}.weight"] = graph.param(conv, "weight")
        w, b, m, v = _affine_after(conv, graph, consumers)
        tensors.update({f"{bn_key}.weight": w, f"{bn_key}.bias": b, f"{bn_key}.running_mean": m,
                        f"{bn_key}.running_var": v})

    put_conv_bn(graph.node("conv1"), "conv1", "bn1")
    for i, stage in enumerate((2, 3, 4, 5), start=1):
        for b, (block, branches) in enumerate(stages[stage].items()):
            expected = {"1", "2a", "2b", "2c"} if b == 0 else {"2a", "2b", "2c"}
            if set(branches) != expected:
                raise _not_resnet(f"block res{stage}{block} has branches {sorted(branches)}, "
                                  f"expected {sorted(expected)}")
            for branch, conv in branches.items():
                conv_key, bn_key = _BRANCH_KEYS[branch]
                put_conv_bn(conv, f"layer{i}.{b}.{conv_key}", f"layer{i}.{b}.{bn_key}")
    tensors["fc.weight"] = graph.param(fc, "weight")
    if "bias" in fc.params:
        tensors["fc.bias"] = graph.param(fc, "bias")
    num_classes = int(fc.attrs["num_output"])

    with torch.device("meta"):  # only the key/shape table is needed
        reference = TorchvisionResNet(layers, num_classes).state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, ref in reference.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
            continue
        if key not in tensors:
            raise _not_resnet(f"nothing in the graph gives torchvision's {key!r}")
        arr = np.asarray(tensors[key], dtype=np.float32)
        if tuple(arr.shape) != tuple(ref.shape):
            raise _not_resnet(f"{key} would have shape {list(arr.shape)}, torchvision's is {list(ref.shape)}")
        state[key] = torch.from_numpy(arr.copy())
    return TorchvisionProfile(state, layers, num_classes, fc.outputs[0])


# =========================================================================== code generation support
def helper_source(classes: Sequence[type[nn.Module]]) -> str:
    """Source of the helper classes (and ``pool_output_size``) that generated code needs."""
    parts = []
    if CaffePooling in classes:
        parts.append(inspect.getsource(pool_output_size))
    parts.extend(inspect.getsource(c) for c in HELPER_CLASSES if c in classes)
    return "\n\n".join(p.rstrip() + "\n" for p in parts)


__all__ = ["SUFFIXES", "to_module", "write", "CaffeNet", "BUILDERS", "builder", "LayerSpec", "layer_spec",
           "module_names", "node_module_names", "sanitize", "state_dict", "torchvision_profile",
           "TorchvisionProfile", "TorchvisionResNet"]
