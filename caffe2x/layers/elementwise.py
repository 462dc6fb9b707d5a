"""Element-wise neuron layers: Power, AbsVal, BNLL, Exp, Log, Threshold, Clip, Swish.

Each is one op of the same name; the reader turns Caffe's parameters into the constants Caffe's
``Forward_cpu`` actually uses, so targets only evaluate a formula:

==========  =====================================  ===============================================
op          attrs                                  y
==========  =====================================  ===============================================
Power       power, scale, shift                    ``(shift + scale * x) ** power``; when
                                                   ``power * scale == 0`` Caffe skips the input and
                                                   writes the constant ``1`` (power 0) or
                                                   ``shift ** power``
AbsVal      -                                      ``|x|``
BNLL        -                                      ``x + log(1 + exp(-x))`` for ``x > 0``, else
                                                   ``log(1 + exp(x))`` (softplus)
Exp         inner_scale, outer_scale               ``outer_scale * exp(inner_scale * x)``; Caffe's
                                                   ``base ** (shift + scale * x)`` with
                                                   ``inner = ln(base) * scale``, ``outer = base **
                                                   shift`` (base -1 means e)
Log         scale, shift, base_scale               ``log(shift + scale * x) * base_scale``,
                                                   ``base_scale = 1 / ln(base)`` (1 for base e)
Threshold   threshold                              ``1`` where ``x > threshold`` (strictly), else ``0``
Clip        min, max                               ``max(min, min(x, max))``
Swish       beta                                   ``x * sigmoid(beta * x)``
==========  =====================================  ===============================================
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from caffe2x.graph.formulas import power_constant
from caffe2x.layers.base import (Caffe2xError, Graph, LayerSpec, Node, Shape, BlobSource, layer_handler, one_input,
                                 reference_op, same_shape, shape_function)

OPS = ("Power", "AbsVal", "BNLL", "Exp", "Log", "Threshold", "Clip", "Swish")

shape_function(*OPS)(same_shape)

f32 = np.float32


def _base_log(layer: Any, base: float) -> float:
    """Caffe's ``log_base`` of Exp/Log: 1 for base -1 (e), else ``ln(base)`` (base must be > 0)."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): base must be strictly positive (or -1 for e), "
                           f"got {base}")
    if base == 1:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): base 1 has log 0, which Caffe refuses")
    return float(f32(math.log(f32(base))))


# --------------------------------------------------------------------------- reader
@layer_handler("Power")
def _power(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    p = layer.power_param
    return LayerSpec("Power", {"power": float(p.power), "scale": float(p.scale), "shift": float(p.shift)})


@layer_handler("AbsVal", "BNLL")
def _plain(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    return LayerSpec(layer.type)


@layer_handler("Exp")
def _exp(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    p = layer.exp_param
    base, scale, shift = float(p.base), float(f32(p.scale)), float(f32(p.shift))
    log_base = _base_log(layer, base)
    if shift == 0:
        outer = 1.0
    else:
        outer = float(f32(math.exp(shift))) if base == -1 else float(f32(math.pow(f32(base), shift)))
    return LayerSpec("Exp", {"inner_scale": float(f32(log_base) * f32(scale)), "outer_scale": outer})


@layer_handler("Log")
def _log(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    p = layer.log_param
    log_base = _base_log(layer, float(p.base))
    return LayerSpec("Log", {"scale": float(f32(p.scale)), "shift": float(f32(p.shift)),
                             "base_scale": float(f32(1.0) / f32(log_base))})


@layer_handler("Threshold")
def _threshold(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    return LayerSpec("Threshold", {"threshold": float(f32(layer.threshold_param.threshold))})


@layer_handler("ReLU6")
def _relu6(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """The forks' ReLU6 (MobileNet v2/v3 ports): ``min(max(0, x), 6)``, i.e. a Clip to [0, 6]."""
    one_input(layer, ins)
    return LayerSpec("Clip", {"min": 0.0, "max": 6.0})


@layer_handler("Clip")
def _clip(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    p = layer.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        raise Caffe2xError(f"layer {layer.name!r} (Clip) needs both clip_param.min and clip_param.max")
    return LayerSpec("Clip", {"min": float(f32(p.min)), "max": float(f32(p.max))})


@layer_handler("Swish")
def _swish(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    one_input(layer, ins)
    return LayerSpec("Swish", {"beta": float(f32(layer.swish_param.beta))})


# --------------------------------------------------------------------------- numpy reference
@reference_op("Power")
def _power_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    const = power_constant(a)
    if const is not None:
        return [np.full_like(x, const)]
    y = x * f32(a["scale"]) if a["scale"] != 1 else x
    y = y + f32(a["shift"]) if a["shift"] != 0 else y
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return [np.power(y, f32(a["power"])) if a["power"] != 1 else y]


@reference_op("AbsVal")
def _absval_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.abs(ins[0])]


@reference_op("BNLL")
def _bnll_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    x = ins[0].astype(np.float64)  # Caffe evaluates log(1. + exp(.)) in double
    with np.errstate(over="ignore"):
        y = np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))
    return [y.astype(np.float32)]


@reference_op("Exp")
def _exp_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    inner, outer = node.attrs["inner_scale"], node.attrs["outer_scale"]
    with np.errstate(over="ignore"):
        y = np.exp(x * f32(inner) if inner != 1 else x)
    return [y * f32(outer) if outer != 1 else y]


@reference_op("Log")
def _log_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    y = x * f32(a["scale"]) if a["scale"] != 1 else x
    y = y + f32(a["shift"]) if a["shift"] != 0 else y
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(y)
    return [y * f32(a["base_scale"]) if a["base_scale"] != 1 else y]


@reference_op("Threshold")
def _threshold_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [(ins[0] > f32(node.attrs["threshold"])).astype(np.float32)]


@reference_op("Clip")
def _clip_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.maximum(f32(node.attrs["min"]), np.minimum(ins[0], f32(node.attrs["max"])))]


@reference_op("Swish")
def _swish_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    with np.errstate(over="ignore"):
        return [x * (f32(1) / (f32(1) + np.exp(-(x * f32(node.attrs["beta"])))))]
