"""The torch target's op registry :data:`OPS`: one builder per Caffe op, giving the module class, its
constructor arguments and its tensors (:class:`LayerSpec`). Op families beside this module
(``caffe2x/targets/torch/<family>.py``) register more builders with :func:`builder`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.registry import Registry
from caffe2x.targets.torch.modules import (CaffeBatchNorm, CaffeConcat, CaffeEltwise, CaffeInnerProduct, CaffeLRN,
                                           CaffePooling, CaffeScale)


@dataclass
class LayerSpec:
    """How to make one layer's module: a class, its constructor arguments (plain Python values, so
    generated code can spell them out) and the tensors to load into it, keyed by the module's own
    state_dict names (the node's param roles)."""

    cls: type[nn.Module]
    kwargs: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def instantiate(self, layer: str, share: bool = False) -> nn.Module:
        """The module holding the tensors (built on the meta device and then given the tensors, which
        skips a random initialisation that would be overwritten anyway): copies of them, or with
        ``share`` the arrays' own memory (see :func:`as_tensor`)."""
        with torch.device("meta"):
            module = self.cls(**self.kwargs)
        state = {role: as_tensor(arr, share) for role, arr in self.tensors.items()}
        try:
            module.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            lines = str(exc).strip().splitlines()
            raise Caffe2xError(f"layer {layer!r}: its tensors do not fit {self.cls.__name__}: "
                               f"{lines[-1].strip() if lines else exc}") from None
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            raise Caffe2xError(f"layer {layer!r}: {self.cls.__name__} has state the graph does not provide")
        return module


def as_tensor(arr: np.ndarray, share: bool) -> torch.Tensor:
    """A float32 tensor of ``arr``: with ``share`` it is ``arr``'s own memory (``torch.from_numpy``,
    no copy) whenever numpy allows writing to it, else (and without ``share``) an independent copy.

    A read-only array (e.g. a view of an immutable ``bytes``) is copied rather than shared: torch
    cannot promise not to write through it."""
    arr = np.asarray(arr, dtype=np.float32)
    if share and arr.flags.writeable and arr.dtype.isnative:
        return torch.from_numpy(arr)
    return torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))


Builder = Callable[[Node, Graph], LayerSpec]
#: op -> builder; supporting a new op is registering one function here
OPS: Registry[Builder] = Registry("op (torch target)")
BUILDERS = OPS  # the name used before the target became a package
builder = OPS.register


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
    maf = float(node.attrs.get("moving_average_fraction", 0.999))  # Caffe's default
    return LayerSpec(CaffeBatchNorm, {"num_features": c, "eps": float(node.attrs["eps"]), "momentum": 1.0 - maf},
                     _tensors(node, graph))


@builder("Scale")
def _scale(node: Node, graph: Graph) -> LayerSpec:
    shape = tuple(int(d) for d in graph.param(node, "weight").shape)
    return LayerSpec(CaffeScale, {"shape": shape, "axis": int(node.attrs["axis"]), "bias": "bias" in node.params,
                                  "rank": len(graph.shapes[node.inputs[0]])}, _tensors(node, graph))


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
        "layer": node.name,
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
    return OPS.lookup(node.op, node.name)(node, graph)

