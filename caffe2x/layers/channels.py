"""Channel-wise layers of mobile nets: ShuffleChannel (ShuffleNet fork) and ConvolutionDepthwise
(MobileNet/ShuffleNet ports).

* ``ShuffleChannel`` (op ``ShuffleChannel``, attr ``group``): channels viewed as ``(group, C/group)`` and
  transposed, i.e. output channel ``j * group + i`` is input channel ``i * (C/group) + j``.
* ``ConvolutionDepthwise`` is the forks' name for a convolution with one group per input channel
  (the layer's ``group`` is ignored); it is read as the core op ``Convolution`` with ``group = C``, so
  every target's grouped convolution runs it. ``DepthwiseConvolution`` (yonghenglh6/DepthwiseConvolution,
  copied into many MobileNet ports) is the same layer under another name: its blobs are a
  convolution's (C, 1, kh, kw) and (C), its prototxts set ``group`` to the channels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import LAYERS
from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, layer_handler, one_input,
                                 reference_op, shape_function)


@layer_handler("ShuffleChannel")
def _shuffle(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    group = int(layer.shuffle_channel_param.group)
    if len(x) < 2 or group < 1 or x[1] % group:
        raise Caffe2xError(f"layer {layer.name!r} (ShuffleChannel): group {group} must divide the channels of "
                           f"{list(x)}")
    return LayerSpec("ShuffleChannel", {"group": group})


@shape_function("ShuffleChannel")
def _shuffle_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [ins[0]]


@reference_op("ShuffleChannel")
def _shuffle_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    g = node.attrs["group"]
    n, c = x.shape[:2]
    return [np.ascontiguousarray(x.reshape(n, g, c // g, *x.shape[2:]).swapaxes(1, 2)).reshape(x.shape)]


@layer_handler("ConvolutionDepthwise", "DepthwiseConvolution")
def _depthwise(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    if len(x) != 4:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) needs a 4-D input, got {list(x)}")
    conv = type(layer)()
    conv.CopyFrom(layer)
    conv.type = "Convolution"
    conv.convolution_param.group = x[1]
    if conv.convolution_param.num_output % x[1]:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): num_output "
                           f"{conv.convolution_param.num_output} must be a multiple of the {x[1]} input channels")
    return LAYERS["Convolution"](conv, ins, blobs)
