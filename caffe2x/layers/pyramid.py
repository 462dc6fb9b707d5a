"""BVLC's SPP layer (spatial pyramid pooling, ``spp_layer.cpp``), read as the layers Caffe runs inside it.

For pyramid level l (0 .. pyramid_height - 1) over an H x W map, ``bins = 2^l`` and per axis
``kernel = ceil(H / bins)``, ``pad = (kernel * bins - H + 1) // 2`` (integer division), ``stride =
kernel``: a Caffe Pooling (``spp_param.pool``, MAX or AVE, Caffe's ceil rounding). With
``pyramid_height: 1`` that pooling is the layer's output (N, C, 1, 1); otherwise each level's pooling is
flattened and the levels are concatenated: (N, C * sum of bins^2). The graph gets exactly those nodes
(``<layer>/pool<l>``, ``<layer>/flatten<l>``, the concat named as the layer), so every target runs its
own Pooling, Flatten and Concat, and no target needs an SPP op.
"""
from __future__ import annotations

from typing import Any

from caffe2x.caffe.parse import _pb2
from caffe2x.caffe.reader import Composite, SubLayer
from caffe2x.layers.base import (BlobSource, Caffe2xError, LayerSpec, Shape, UnsupportedLayerError, layer_handler,
                                 one_input)


def spp_level(level: int, height: int, width: int) -> tuple[list[int], list[int]]:
    """Kernel (= stride) and pad of one pyramid level, per axis (h, w)."""
    bins = 2 ** level
    kernel, pad = [], []
    for size in (height, width):
        k = -(-size // bins)  # ceil
        kernel.append(k)
        pad.append((k * bins - size + 1) // 2)
    return kernel, pad


@layer_handler("SPP")
def _spp(layer: Any, ins: list[Shape], blobs: BlobSource) -> Composite:
    x = one_input(layer, ins)
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} (SPP) needs a 4-D input, got {list(x)}")
    p = layer.spp_param
    pb2 = _pb2()
    methods = {pb2.SPPParameter.MAX: "max", pb2.SPPParameter.AVE: "ave"}
    if p.pool not in methods:
        raise UnsupportedLayerError(layer.name, f"SPP {pb2.SPPParameter.PoolMethod.Name(p.pool)}", "layer")
    height = int(p.pyramid_height)
    if height < 1:
        raise Caffe2xError(f"layer {layer.name!r} (SPP) needs pyramid_height >= 1")
    parts = []
    for level in range(height):
        kernel, pad = spp_level(level, x[2], x[3])
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:  # Caffe's PoolingLayer refuses it too (CHECK_LT)
            raise Caffe2xError(f"layer {layer.name!r} (SPP): level {level} of a {x[2]}x{x[3]} map needs pad {pad} "
                               f"not smaller than kernel {kernel}, which Caffe's pooling refuses")
        pooling = LayerSpec("Pooling", {"method": methods[p.pool], "kernel": kernel, "stride": list(kernel),
                                        "pad": pad, "ceil": True, "global_pooling": False})
        if height == 1:
            return Composite([SubLayer("", pooling, [0])])
        parts.append(SubLayer(f"pool{level}", pooling, [0]))
        parts.append(SubLayer(f"flatten{level}", LayerSpec("Flatten", {"axis": 1, "end_axis": 3}),
                              [f"pool{level}"]))
    parts.append(SubLayer("", LayerSpec("Concat", {"axis": 1}), [f"flatten{level}" for level in range(height)]))
    return Composite(parts)
