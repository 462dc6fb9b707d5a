"""Normalisation by statistics of the input itself: MVN, BatchNorm with ``use_global_stats: false``,
and the fork ``BN`` layer (ENet/SegNet's caffe-segnet, PSPNet).

=============  ============================================  ==========================================
op             attrs / tensors                               y
=============  ============================================  ==========================================
MeanVarNorm    axes (reduced, Caffe order), eps,             ``(x - mean) / (std + eps)`` (MVN) or
               eps_in_sqrt, normalize_variance               ``(x - mean) / sqrt(var + eps)``
                                                             (BatchNorm), mean/var over ``axes``; the
                                                             variance is the biased one
BN             mode, eps; weight, bias (1, C, 1, 1) and,     ``affine``: ``x * weight + bias``;
               with four blobs, running_mean, running_var    ``batch``: batch statistics over N, H, W,
                                                             ``sqrt(var + eps)``, then affine;
                                                             ``stored``: the stored statistics, then
                                                             affine
=============  ============================================  ==========================================

* **MVN** (``mvn_layer.cpp``): mean over each sample's H*W (or C*H*W with ``across_channels``); with
  ``normalize_variance`` the result is divided by ``sqrt(E[(x - mean)^2]) + eps`` -- Caffe adds eps to
  the standard deviation, not to the variance (default eps 1e-9).
* **BatchNorm, use_global_stats: false**: Caffe's BatchNormLayer uses the stored statistics only when
  ``use_global_stats`` is true, which is the TEST-phase default; a deploy net that sets it to false
  explicitly is normalised with the *current batch's* per-channel mean and biased variance over N, H, W
  (``eps`` added to the variance), so its outputs depend on what else is in the batch. The stored blobs
  are still read (and kept as tensors) but do not enter the result.
* **BN** with two blobs (caffe-segnet / caffe-enet ``bn_layer.cpp``: scale, shift, shaped 1 x C x 1 x 1):
  ``bn_mode: INFERENCE`` is ``x * scale + shift`` (SegNet's ``compute_bn_statistics.py`` folds the
  statistics into those two blobs); the default ``LEARN`` normalises with the batch's statistics and a
  fixed eps of 1e-9 (the fork ignores any eps setting), then scales and shifts. With four blobs (PSPNet:
  slope, bias, mean, variance) the stored statistics are used with ``bn_param.eps`` (default 1e-5).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import LAYERS
from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, expect_tensor,
                                 layer_handler, one_input, reference_op, shape_function)

#: the reader's BatchNorm handler (stored statistics); this module adds use_global_stats: false
_batchnorm_global = LAYERS["BatchNorm"]

#: caffe-segnet's BN uses this eps whatever the prototxt says
SEGNET_BN_EPS = 1e-9


@layer_handler("MVN")
def _mvn(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} (MVN) needs a 4-D input (Caffe's MVN uses num/channels/height/"
                           f"width), got {list(x)}")
    p = layer.mvn_param
    axes = [1, 2, 3] if p.across_channels else [2, 3]
    return LayerSpec("MeanVarNorm", {"axes": axes, "eps": float(p.eps), "eps_in_sqrt": False,
                                     "normalize_variance": bool(p.normalize_variance)})


@layer_handler("BatchNorm")
def _batchnorm(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """``use_global_stats: false`` set explicitly: batch statistics (see the module docstring)."""
    p = layer.batch_norm_param
    if not (p.HasField("use_global_stats") and not p.use_global_stats):
        return _batchnorm_global(layer, ins, blobs)
    x = one_input(layer, ins)
    if len(x) < 2:
        raise Caffe2xError(f"layer {layer.name!r} (BatchNorm) needs at least a 2-D input, got {list(x)}")
    # the blobs are read so that a caffemodel that does not fit the net is still an error
    for i, (shape, kind, role) in enumerate((((x[1],), "mean", "mean"), ((x[1],), "var", "variance"),
                                             ((1,), "factor", "moving-average factor"))):
        if blobs.blobs is not None and blobs.has(i):
            blobs.get(i, shape, kind, role)
    axes = [0] + list(range(2, len(x)))
    return LayerSpec("MeanVarNorm", {"axes": axes, "eps": float(p.eps), "eps_in_sqrt": True,
                                     "normalize_variance": True})


@shape_function("MeanVarNorm")
def _mvn_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [ins[0]]


@reference_op("MeanVarNorm")
def _mvn_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    axes = tuple(a["axes"])
    centred = x - x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
    if not a["normalize_variance"]:
        return [centred]
    var = (centred.astype(np.float64) ** 2).mean(axis=axes, keepdims=True).astype(np.float32)
    eps = np.float32(a["eps"])
    return [centred / (np.sqrt(var + eps) if a["eps_in_sqrt"] else np.sqrt(var) + eps)]


# --------------------------------------------------------------------------- the fork BN layer
@layer_handler("BN")
def _bn(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} (BN) needs a 4-D input, got {list(x)}")
    p = getattr(layer, "bn_param", None)
    shape = (1, x[1], 1, 1)
    if blobs.blobs is not None:
        four = len(blobs.blobs) >= 4
    else:  # weightless: PSPNet's four blobs when a PSPNet-only field is set, else caffe-segnet's two
        four = p is not None and any(p.HasField(f) for f in ("frozen", "momentum", "slope_filler", "bias_filler"))
    params = {"weight": blobs.get(0, shape, "gamma", "scale"), "bias": blobs.get(1, shape, "beta", "shift")}
    if four:
        params["running_mean"] = blobs.get(2, shape, "mean", "mean")
        params["running_var"] = blobs.get(3, shape, "var", "variance")
        return LayerSpec("BN", {"mode": "stored", "eps": float(p.eps) if p is not None else 1e-5}, params)
    inference = p is not None and p.bn_mode == type(p).INFERENCE
    return LayerSpec("BN", {"mode": "affine" if inference else "batch", "eps": SEGNET_BN_EPS}, params)


@shape_function("BN")
def _bn_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    for role in node.params:
        expect_tensor(node, graph, role, (1, x[1], 1, 1))
    return [x]


@reference_op("BN")
def _bn_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    w, b = graph.param(node, "weight"), graph.param(node, "bias")
    if a["mode"] == "affine":
        return [x * w + b]
    if a["mode"] == "stored":
        mean, var = graph.param(node, "running_mean"), graph.param(node, "running_var")
    else:
        mean = x.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
        var = (x.astype(np.float64) ** 2).mean(axis=(0, 2, 3), keepdims=True) - mean ** 2  # the fork's E[x^2]-E[x]^2
        mean, var = mean.astype(np.float32), var.astype(np.float32)
    return [(x - mean) / np.sqrt(var + np.float32(a["eps"])) * w + b]
