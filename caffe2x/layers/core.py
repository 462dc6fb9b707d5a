"""The core Caffe layer types' reader handlers: Convolution and Deconvolution, Pooling, BatchNorm, Scale,
the activations (ReLU, ELU, PReLU, Sigmoid, TanH), Dropout, Eltwise, InnerProduct, Softmax, LRN, Concat,
Flatten.

Each handler turns one Caffe layer into a graph op with Caffe's defaults spelled out (explicit ``[h, w]``
kernels, strides and pads; BatchNorm statistics with the moving-average factor divided out), so no
target has to know Caffe. Their shape rules live in :mod:`caffe2x.graph.ir` and their numpy references in
:mod:`caffe2x.graph.reference`; other layer types are families beside this module. Imported first by
:mod:`caffe2x.layers`, since families extend some of these handlers (two-input Scale, BatchNorm with
batch statistics).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.forkfix import has_field
from caffe2x.caffe.parse import _pb2
from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Shape, normalize_axis


def _pair(layer: Any, p: Any, name: str, default: int) -> list[int]:
    """Caffe's ``<name>_h``/``<name>_w`` or repeated ``<name>`` (one value for both, or h then w)."""
    if f"{name}_h" in p.DESCRIPTOR.fields_by_name and (p.HasField(f"{name}_h") or p.HasField(f"{name}_w")):
        return [int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))]
    vals = list(getattr(p, name if name != "kernel" else "kernel_size"))
    if not vals:
        return [default, default]
    if len(vals) == 1:
        return [int(vals[0])] * 2
    if len(vals) == 2:
        return [int(v) for v in vals]
    raise UnsupportedLayerError(layer.name, f"{layer.type} with {len(vals)}-D {name}", "layer")


def _one_input(layer: Any, ins: list[Shape]) -> Shape:
    if len(ins) != 1:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes one input, got {len(ins)}")
    return ins[0]


def _rank_message(layer: Any, x: Shape) -> str:
    return (f"layer {layer.name!r} ({layer.type}) needs a 4-D N,C,H,W input, but blob {layer.bottom[0]!r} is "
            f"{len(x)}-D {list(x)}")


@layer_handler("Convolution", "Deconvolution")
def _convolution(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    p = layer.convolution_param
    if len(x) != 4:
        raise Caffe2xError(_rank_message(layer, x))
    if p.axis != 1:
        raise UnsupportedLayerError(layer.name, f"{layer.type} with axis {p.axis}", "layer")
    if p.HasField("kernel_h") != p.HasField("kernel_w") or (not p.HasField("kernel_h") and not len(p.kernel_size)):
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) has no kernel size")
    kernel = [int(p.kernel_h), int(p.kernel_w)] if p.HasField("kernel_h") else _pair(layer, p, "kernel", 1)
    group = int(p.group)
    attrs = {
        "kernel": kernel,
        "stride": _pair(layer, p, "stride", 1),
        "pad": _pair(layer, p, "pad", 0),
        "dilation": _pair(layer, p, "dilation", 1),
        "group": group,
        "num_output": int(p.num_output),
    }
    if group < 1 or x[1] % group or p.num_output % group:
        raise Caffe2xError(f"layer {layer.name!r}: channels {x[1]} and num_output {p.num_output} must be "
                           f"divisible by group {group}")
    if layer.type == "Deconvolution":  # Caffe stores deconvolution weights (C_in, C_out/group, kh, kw)
        wshape = (x[1], p.num_output // group, *kernel)
    else:
        wshape = (p.num_output, x[1] // group, *kernel)
    params = {"weight": blobs.get(0, wshape, "he", "weight")}
    if p.bias_term:
        params["bias"] = blobs.get(1, (p.num_output,), "bias", "bias")
    return LayerSpec(layer.type, attrs, params)


@layer_handler("Pooling")
def _pooling(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    p = layer.pooling_param
    pb2 = _pb2()
    if len(x) != 4:
        raise Caffe2xError(_rank_message(layer, x))
    methods = {pb2.PoolingParameter.MAX: "max", pb2.PoolingParameter.AVE: "ave"}
    if p.pool not in methods:
        raise UnsupportedLayerError(layer.name, f"Pooling {pb2.PoolingParameter.PoolMethod.Name(p.pool)}", "layer")
    if p.global_pooling:
        kernel, stride, pad = [x[2], x[3]], [1, 1], [0, 0]
    else:
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            kernel = [int(p.kernel_h), int(p.kernel_w)]
        elif p.HasField("kernel_size"):
            kernel = [int(p.kernel_size)] * 2
        else:
            raise Caffe2xError(f"layer {layer.name!r} (Pooling) has no kernel size")
        stride = [int(p.stride_h), int(p.stride_w)] if p.HasField("stride_h") else [int(p.stride)] * 2
        pad = [int(p.pad_h), int(p.pad_w)] if p.HasField("pad_h") else [int(p.pad)] * 2
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise Caffe2xError(f"layer {layer.name!r} (Pooling): pad {pad} must be smaller than kernel {kernel}")
    ceil = not (p.HasField("round_mode") and p.round_mode == pb2.PoolingParameter.FLOOR)
    if has_field(p, "ceil_mode"):  # the ceil_mode fork patch (docs/forks.md)
        if p.HasField("round_mode") and bool(p.ceil_mode) != ceil:
            raise Caffe2xError(f"layer {layer.name!r} (Pooling): ceil_mode and round_mode disagree")
        ceil = bool(p.ceil_mode)
    op = "Pooling"
    if len(layer.top) > 1:  # Caffe's MAX pooling can write its argmax mask as a second top (SegNet, ENet)
        if p.pool != pb2.PoolingParameter.MAX or len(layer.top) > 2:
            raise Caffe2xError(f"layer {layer.name!r} (Pooling): only MAX pooling has a second (mask) top")
        op = "PoolingWithMask"
    return LayerSpec(op, {"method": methods[p.pool], "kernel": kernel, "stride": stride, "pad": pad,
                                 "ceil": ceil, "global_pooling": bool(p.global_pooling)})


@layer_handler("BatchNorm")
def _batch_norm(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    p = layer.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise UnsupportedLayerError(layer.name, "BatchNorm with use_global_stats: false (mini-batch statistics)",
                                    "layer")
    c = x[1]
    mean = blobs.get(0, (c,), "mean", "mean")
    var = blobs.get(1, (c,), "var", "variance")
    factor = blobs.get(2, (1,), "factor", "moving-average factor")[0]
    # Caffe multiplies the stored statistics by 1/factor, and by 0 when the factor is 0 (a BatchNorm that
    # never saw a batch: mean = var = 0, so y = x / sqrt(eps)) -- batch_norm_layer.cpp, and OpenCV agrees
    scale = np.float32(1.0) / factor if factor != 0 else np.float32(0.0)
    # moving_average_fraction is kept for trainable conversions (the framework's BatchNorm momentum)
    maf = float(str(np.float32(p.moving_average_fraction)))  # 0.999, not float32's 0.99900001
    return LayerSpec("BatchNorm", {"eps": float(p.eps), "moving_average_fraction": maf},
                     {"running_mean": (mean * scale).astype(np.float32), "running_var": (var * scale).astype(np.float32)})


@layer_handler("Scale")
def _scale(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    if len(ins) != 1:
        raise UnsupportedLayerError(layer.name, "Scale with a second (scale) input", "layer")
    x = ins[0]
    p = layer.scale_param
    axis = normalize_axis(p.axis, len(x), layer.name)
    num_axes = int(p.num_axes)
    pshape = x[axis:] if num_axes == -1 else x[axis:axis + num_axes]
    params = {"weight": blobs.get(0, pshape, "gamma", "scale")}
    if p.bias_term:
        params["bias"] = blobs.get(1, pshape, "beta", "bias")
    return LayerSpec("Scale", {"axis": axis, "num_axes": num_axes}, params)


@layer_handler("ReLU")
def _relu(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _one_input(layer, ins)
    return LayerSpec("ReLU", {"negative_slope": float(layer.relu_param.negative_slope)})


@layer_handler("ELU")
def _elu(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _one_input(layer, ins)
    return LayerSpec("ELU", {"alpha": float(layer.elu_param.alpha)})


@layer_handler("PReLU")
def _prelu(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    if len(x) < 2:
        raise Caffe2xError(f"layer {layer.name!r} (PReLU) needs at least a 2-D input, got {list(x)}")
    shared = bool(layer.prelu_param.channel_shared)
    return LayerSpec("PReLU", {"channel_shared": shared},
                     {"weight": blobs.get(0, (1,) if shared else (x[1],), "slope", "slope")})


@layer_handler("Sigmoid", "TanH")
def _plain_activation(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _one_input(layer, ins)
    return LayerSpec(layer.type)


@layer_handler("Dropout")
def _dropout(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _one_input(layer, ins)
    if has_field(layer.dropout_param, "sample_weights_test") and layer.dropout_param.sample_weights_test:
        raise Caffe2xError(f"layer {layer.name!r} (Dropout) keeps dropping at test time (sample_weights_test, "
                           f"Monte Carlo dropout): its output is random and cannot be converted")
    return LayerSpec("Dropout", {"ratio": float(layer.dropout_param.dropout_ratio)})


@layer_handler("Eltwise")
def _eltwise(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    p = layer.eltwise_param
    pb2 = _pb2()
    ops = {pb2.EltwiseParameter.SUM: "sum", pb2.EltwiseParameter.PROD: "prod", pb2.EltwiseParameter.MAX: "max"}
    if len(ins) < 2:
        raise Caffe2xError(f"layer {layer.name!r} (Eltwise) needs at least two inputs")
    coeff = [float(c) for c in p.coeff] or [1.0] * len(ins)
    if len(coeff) != len(ins):
        raise Caffe2xError(f"layer {layer.name!r} (Eltwise) has {len(coeff)} coeff for {len(ins)} inputs")
    if p.operation != pb2.EltwiseParameter.SUM and len(p.coeff):
        raise Caffe2xError(f"layer {layer.name!r} (Eltwise): coeff is only allowed with SUM")
    return LayerSpec("Eltwise", {"operation": ops[p.operation], "coeff": coeff})


@layer_handler("InnerProduct")
def _inner_product(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    p = layer.inner_product_param
    axis = normalize_axis(p.axis, len(x), layer.name)
    k = int(np.prod(x[axis:]))
    o = int(p.num_output)
    if p.transpose:
        weight = np.ascontiguousarray(blobs.get(0, (k, o), "he", "weight").T)
    else:
        weight = blobs.get(0, (o, k), "he", "weight")
    params = {"weight": weight}
    if p.bias_term:
        params["bias"] = blobs.get(1, (o,), "bias", "bias")
    return LayerSpec("InnerProduct", {"axis": axis, "num_output": o}, params)


@layer_handler("Softmax")
def _softmax(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    return LayerSpec("Softmax", {"axis": normalize_axis(layer.softmax_param.axis, len(x), layer.name)})


@layer_handler("LRN")
def _lrn(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _one_input(layer, ins)
    p = layer.lrn_param
    if p.local_size % 2 == 0:
        raise Caffe2xError(f"layer {layer.name!r} (LRN): local_size must be odd, got {p.local_size}")
    region = "across" if p.norm_region == _pb2().LRNParameter.ACROSS_CHANNELS else "within"
    return LayerSpec("LRN", {"size": int(p.local_size), "alpha": float(p.alpha), "beta": float(p.beta),
                             "k": float(p.k), "region": region})


@layer_handler("Concat")
def _concat(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    p = layer.concat_param
    axis = p.concat_dim if (p.HasField("concat_dim") and not p.HasField("axis")) else p.axis
    return LayerSpec("Concat", {"axis": normalize_axis(axis, len(ins[0]), layer.name)})


@layer_handler("Flatten")
def _flatten(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = _one_input(layer, ins)
    p = layer.flatten_param
    axis = normalize_axis(p.axis, len(x), layer.name)
    end = normalize_axis(p.end_axis, len(x), layer.name)
    return LayerSpec("Flatten", {"axis": axis, "end_axis": end})
