"""ONNX converters for the OCR fork's sequence layers (:mod:`caffe2x.layers.sequence`): Reverse (a
``Slice`` with step -1), ReverseTime (``GatherElements`` along time with per-sample indices) and
CTCGreedyDecoder (``ArgMax``, masks, ``CumSum`` slots). The
fork's Lstm is the LSTM op without ``cont`` (:mod:`.recurrent`), its Transpose a Permute."""
from __future__ import annotations

import numpy as np

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter

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


@converter("CTCGreedyDecoder")
def _ctc_greedy_decoder(b: Builder, node: Node) -> None:
    """ArgMax (first of equal maxima), blanks and repeats masked, each kept step's output slot by a
    running count, the labels placed by a (T, N, T) one-hot sum; empty slots -1."""
    a = node.attrs
    steps, n = b.shape(node.inputs[0])[:2]
    scores = b.tmp("Reshape", [b.inp(node), b.shape_const(node, "tnc", [steps, 0, -1])], node, "scores")
    best = b.tmp("ArgMax", [scores], node, "best", axis=2, keepdims=0, select_last_index=0)          # (T, N)
    keep = b.tmp("Not", [b.tmp("Equal", [best, b.shape_const(node, "blank", [a["blank_index"]])], node, "is_blank")],
                 node, "not_blank")
    if a["merge_repeated"]:
        first = b.tmp("Mul", [b.tmp("Slice", [best, b.shape_const(node, "p0", [0]), b.shape_const(node, "p1", [1]),
                                              b.shape_const(node, "p_ax", [0])], node, "best0"),
                              b.shape_const(node, "zero", [0])], node, "zeros0")
        previous = b.tmp("Concat", [b.tmp("Sub", [first, b.shape_const(node, "one", [1])], node, "minus1"),
                                    b.tmp("Slice", [best, b.shape_const(node, "q0", [0]),
                                                    b.shape_const(node, "q1", [steps - 1]),
                                                    b.shape_const(node, "q_ax", [0])], node, "shifted")],
                         node, "previous", axis=0)
        keep = b.tmp("And", [keep, b.tmp("Not", [b.tmp("Equal", [best, previous], node, "repeat")], node, "new")],
                     node, "keep")
    slot = b.tmp("Sub", [b.tmp("CumSum", [b.tmp("Cast", [keep], node, "keep_i", to=7),
                                          b.const(node, "ax_t", np.array(0, dtype=np.int64))], node, "count"),
                         b.shape_const(node, "one_i", [1])], node, "slot")                            # (T, N)
    unsq = b.shape_const(node, "ax_last", [2])
    positions = b.const(node, "positions", np.arange(steps, dtype=np.int64).reshape(1, 1, steps))
    at = b.tmp("And", [b.tmp("Unsqueeze", [keep, unsq], node, "keep3"),
                       b.tmp("Equal", [b.tmp("Unsqueeze", [slot, unsq], node, "slot3"), positions], node, "at_slot")],
               node, "at")                                                                          # (T, N, T)
    label = b.tmp("Cast", [b.tmp("Unsqueeze", [best, unsq], node, "best3")], node, "label", to=1)
    zero = b.const(node, "f_zero", np.array(0, dtype=np.float32))
    labels = b.tmp("ReduceSum", [b.tmp("Where", [at, label, zero], node, "placed"), b.shape_const(node, "ax0", [0])],
                   node, "labels", keepdims=0)                                                       # (N, T)
    filled = b.tmp("ReduceSum", [b.tmp("Cast", [at], node, "at_i", to=7), b.shape_const(node, "ax0b", [0])], node,
                   "filled", keepdims=0)
    out = b.tmp("Where", [b.tmp("Greater", [filled, b.shape_const(node, "none", [0])], node, "has_label"), labels,
                          b.const(node, "minus_one", np.array(-1, dtype=np.float32))], node, "sequence")
    b.add("Reshape", [out, b.shape_const(node, "out_shape", [-1, steps, 1, 1])], b.out(node), node.name)
