"""ONNX converters for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse (a
``Slice`` with step -1) and ReverseTime (``GatherElements`` along time with per-sample indices). The
fork's Lstm is the LSTM op without ``cont`` (:mod:`.recurrent`), its Transpose a Permute."""
from __future__ import annotations

import numpy as np

from ...ir import Node
from .ops import Builder, converter

_INT64_MIN = np.iinfo(np.int64).min


@converter("Reverse")
def _reverse(b: Builder, node: Node) -> None:
    axis = int(node.attrs["axis"])
    b.add("Slice", [b.inp(node), b.shape_const(node, "starts", [-1]), b.shape_const(node, "ends", [_INT64_MIN]),
                    b.shape_const(node, "axes", [axis]), b.shape_const(node, "steps", [-1])], b.out(node), node.name)


@converter("ReverseTime")
def _reverse_time(b: Builder, node: Node) -> None:
    x_shape = b.shape(node.inputs[0])
    steps, tail = x_shape[0], [1] * (len(x_shape) - 2)
    # Cast truncates toward zero, as Caffe's int(Dtype) does
    length = b.tmp("Unsqueeze", [b.tmp("Cast", [b.inp(node, 1)], node, "length_int", to=7),
                                 b.shape_const(node, "ax0", [0])], node, "length")                    # (1, N)
    t = b.const(node, "t", np.arange(steps, dtype=np.int64).reshape(steps, 1))                        # (T, 1)
    inside = b.tmp("Less", [t, length], node, "inside")                                                # (T, N)
    back = b.tmp("Sub", [b.tmp("Sub", [length, b.shape_const(node, "one", [1])], node, "last"), t], node, "back")
    src = b.tmp("Where", [inside, back, t], node, "src")
    src = b.tmp("Reshape", [src, b.shape_const(node, "src_shape", [steps, -1, *tail])], node, "src_nd")
    src = b.tmp("Expand", [src, b.tmp("Shape", [b.inp(node)], node, "x_shape")], node, "src_full")
    if node.attrs["copy_remaining"]:
        b.add("GatherElements", [b.inp(node), src], b.out(node), node.name, axis=0)
        return
    moved = b.tmp("GatherElements", [b.inp(node), src], node, "moved", axis=0)
    mask = b.tmp("Reshape", [inside, b.shape_const(node, "mask_shape", [steps, -1, *tail])], node, "mask")
    b.add("Where", [mask, moved, b.const(node, "zero", np.array(0, dtype=np.float32))], b.out(node), node.name)
