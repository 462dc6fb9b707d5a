"""The memory-efficient DenseNet's ``DenseBlock`` layer (Tongcheng/caffe ``DenseBlock_layer.cu``, copied
into the DenseNet OCR fork senlinuc/caffe_ocr), read as the layers it computes inside.

One transition ``i`` (0 .. numTransition - 1) reads the ``C_i = C + i * growthRate`` channels so far and
appends ``growthRate`` new ones::

    BN(C_i) -> ReLU -> Conv3x3(C_i -> G)                                  (use_BC: false)
    BN(C_i) -> ReLU -> Conv1x1(C_i -> 4G) -> BN(4G) -> ReLU -> Conv3x3(4G -> G)   (use_BC: true)

The output is the input followed by every transition's G channels: ``C + numTransition * G``.

What the fork computes, from its code (the cuDNN path, which is the one its models were trained and
run with; docs/forks.md has the details):

* **BN** is cuDNN's spatial inference batch norm with the stored statistics as they are:
  ``scaler * (x - mean) / sqrt(var + 1e-5) + bias`` (``CUDNN_BN_MIN_EPSILON``, 1e-5 in the cuDNN of
  the fork's time). The last blob, the "factor" of Caffe's BatchNorm, is never read or updated on the
  GPU (training keeps mean and var as exponential averages itself), so it is ignored here. The fork's
  CPU path divides by it instead, and by 0 when it is 0 -- which it is in every GPU-trained model, so
  that path does not run them.
* **Conv** is cuDNN's ``CUDNN_CONVOLUTION`` mode: a true convolution, the kernel flipped in H and W
  (the CPU path flips too: ``input[h + 1 - kh]``), 3x3, pad 1, stride 1, no bias. Caffe's Convolution
  is a cross-correlation, so the stored 3x3 filters are read flipped. The geometry fields (``pad_h``,
  ``filter_H``, ``conv_verticalStride``, ...) are parsed but, as in the fork, unused.
* **Dropout** runs in training only (cuDNN's, which scales at training): identity here.
* ``initChannel`` is the bottom's channel count (the OCR fork reads it so; Tongcheng's original needs
  the field to equal it).

Blob order in the caffemodel, ``T = numTransition``: ``[0, T)`` 3x3 filters ``(G, C_i or 4G, 3, 3)``,
``[T, 2T)`` BN scalers ``(1, C_i, 1, 1)``, ``[2T, 3T)`` BN biases, ``[3T, 4T)`` means, ``[4T, 5T)``
variances; with use_BC also ``[5T, 6T)`` 1x1 filters ``(4G, C_i, 1, 1)``, ``[6T, 7T)`` / ``[7T, 8T)``
the second BN's scalers / biases, ``[8T, 9T)`` / ``[9T, 10T)`` its means / variances; last, at ``5T``
(``10T`` with BC), the factor ``(1,)``.

The graph gets those nodes (``<layer>/t<i>_bn``, ``_scale``, ``_relu``, ``_conv`` and with BC
``_bc_conv``, ``_bc_bn``, ``_bc_scale``, ``_bc_relu``; ``<layer>/t<i>_concat``; the last concat named
as the layer), so every target runs its own BatchNorm, Scale, ReLU, Convolution and Concat and no
target needs a DenseBlock op.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import Composite, SubLayer
from caffe2x.layers.base import BlobSource, Caffe2xError, LayerSpec, Shape, layer_handler, one_input

#: cuDNN's CUDNN_BN_MIN_EPSILON (cuDNN 5-7), which the fork passes as the BN epsilon
DENSE_BN_EPS = 1e-5


def _bn_parts(prefix: str, source: int | str, channels: int, blobs: BlobSource,
              index: dict[str, int]) -> list[SubLayer]:
    """BN (stored mean and var, no factor) then Scale (scaler, bias): the fork's one BN expression."""
    def get(role: str, kind: str) -> np.ndarray:
        return blobs.get(index[role], (1, channels, 1, 1), kind, f"{prefix} {role}").reshape(channels)

    mean, var = get("mean", "mean"), get("variance", "var")
    scaler, bias = get("scaler", "gamma"), get("bias", "beta")
    bn = LayerSpec("BatchNorm", {"eps": DENSE_BN_EPS, "moving_average_fraction": 0.999},
                   {"running_mean": mean, "running_var": var})
    scale = LayerSpec("Scale", {"axis": 1, "num_axes": 1}, {"weight": scaler, "bias": bias})
    return [SubLayer(f"{prefix}_bn", bn, [source]), SubLayer(f"{prefix}_scale", scale, [f"{prefix}_bn"]),
            SubLayer(f"{prefix}_relu", LayerSpec("ReLU", {"negative_slope": 0.0}), [f"{prefix}_scale"])]


def _conv(weight: np.ndarray, pad: int) -> LayerSpec:
    kernel = list(weight.shape[2:])
    return LayerSpec("Convolution", {"kernel": kernel, "stride": [1, 1], "pad": [pad, pad], "dilation": [1, 1],
                                     "group": 1, "num_output": int(weight.shape[0])}, {"weight": weight})


@layer_handler("DenseBlock")
def _dense_block(layer: Any, ins: list[Shape], blobs: BlobSource) -> Composite:
    x = one_input(layer, ins)
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} (DenseBlock) needs a 4-D N,C,H,W input, got {list(x)}")
    p = layer.denseblock_param
    t_count, growth, bc = int(p.numTransition), int(p.growthRate), bool(p.use_BC)
    if t_count < 1 or growth < 1:
        raise Caffe2xError(f"layer {layer.name!r} (DenseBlock) needs numTransition >= 1 and growthRate >= 1, "
                           f"got {t_count} and {growth}")
    groups = 10 if bc else 5  # blob groups of T before the factor
    # the factor must be there (Caffe refuses a caffemodel with another blob count), though unused
    blobs.get(groups * t_count, (1,), "factor", "factor (unused by the fork's GPU path)")
    parts: list[SubLayer] = []
    previous: int | str = 0
    for i in range(t_count):
        c_i = x[1] + i * growth
        t = f"t{i}"
        parts += _bn_parts(t, previous, c_i, blobs,
                           {"scaler": t_count + i, "bias": 2 * t_count + i, "mean": 3 * t_count + i,
                            "variance": 4 * t_count + i})
        conv_in, last = c_i, f"{t}_relu"
        if bc:
            w1 = blobs.get(5 * t_count + i, (4 * growth, c_i, 1, 1), "he", f"{t} 1x1 filter")
            parts.append(SubLayer(f"{t}_bc_conv", _conv(w1, 0), [last]))
            parts += _bn_parts(f"{t}_bc", f"{t}_bc_conv", 4 * growth, blobs,
                               {"scaler": 6 * t_count + i, "bias": 7 * t_count + i, "mean": 8 * t_count + i,
                                "variance": 9 * t_count + i})
            conv_in, last = 4 * growth, f"{t}_bc_relu"
        w3 = blobs.get(i, (growth, conv_in, 3, 3), "he", f"{t} 3x3 filter")
        # cuDNN's CUDNN_CONVOLUTION flips the kernel; Caffe's Convolution does not
        parts.append(SubLayer(f"{t}_conv", _conv(np.ascontiguousarray(w3[:, :, ::-1, ::-1]), 1), [last]))
        suffix = "" if i == t_count - 1 else f"{t}_concat"
        parts.append(SubLayer(suffix, LayerSpec("Concat", {"axis": 1}), [previous, f"{t}_conv"]))
        previous = suffix
    return Composite(parts)


def dense_block_blobs(graph: Any, layer_name: str) -> list[np.ndarray]:
    """A DenseBlock's tensors back in the fork's stored order and shapes (what :func:`_dense_block` reads),
    the 3x3 filters flipped back and the factor 0, as the fork's GPU training leaves it."""
    def param(suffix: str, role: str) -> np.ndarray:
        return graph.param(graph.node(f"{layer_name}/{suffix}"), role)

    def channel(arr: np.ndarray) -> np.ndarray:
        return arr.reshape(1, -1, 1, 1)

    names = {n.name for n in graph.nodes}
    t_count = sum(1 for n in names if n.startswith(f"{layer_name}/t") and n.endswith("_conv")
                  and not n.endswith("_bc_conv"))
    bc = f"{layer_name}/t0_bc_conv" in names
    ts = [f"t{i}" for i in range(t_count)]
    groups = [[np.ascontiguousarray(param(f"{t}_conv", "weight")[:, :, ::-1, ::-1]) for t in ts]]
    for prefix in ([""] + (["_bc"] if bc else [])):
        if prefix:
            groups.append([param(f"{t}_bc_conv", "weight") for t in ts])
        groups += [[channel(param(f"{t}{prefix}_scale", "weight")) for t in ts],
                   [channel(param(f"{t}{prefix}_scale", "bias")) for t in ts],
                   [channel(param(f"{t}{prefix}_bn", "running_mean")) for t in ts],
                   [channel(param(f"{t}{prefix}_bn", "running_var")) for t in ts]]
    return [b for g in groups for b in g] + [np.zeros(1, np.float32)]
