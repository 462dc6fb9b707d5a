"""The OCR fork's sequence layers (senlinuc/caffe_ocr, CRNN-style text recognition): ``Lstm``,
``Transpose``, ``Reverse``, ``ReverseTime`` and ``CTCGreedyDecoder``.

A CRNN deploy net turns the convolutional feature map (N, C, 1, W) into a sequence with ``Transpose``
(``dim: 3 2 0 1`` -> (W, 1, N, C)) and a ``Reshape`` to (T = W, N, C), runs a forward ``Lstm`` and a
backward one between two ``Reverse`` layers (axis 0), concatenates them on axis 2 and classifies each
step with an ``InnerProduct`` (axis 2); ``CTCGreedyDecoder`` turns the scores into label sequences.

===========  ======================  =================================================================
Caffe type   graph op                semantics (the fork's ``src/caffe/layers/*_layer.cpp``)
===========  ======================  =================================================================
Lstm         LSTM (one input)        ``lstm_layer_Junhyuk.cpp``: x (T, N, I); blobs W_x (4H, I), W_h
                                     (4H, H), b (4H) -- in that order, unlike BVLC's LSTM; gates i, f,
                                     o, g as BVLC's; without a second (clip) bottom ``cont`` is
                                     ``t > 0``: zero initial state, one sequence per sample. That is
                                     BVLC's LSTM op with no ``cont`` input (:mod:`.recurrent`).
Transpose    Permute                 ``transpose_param.dim``: output axis i is input axis ``dim[i]``
                                     (all axes, each once): ``x.transpose(dim)``.
Reverse      Reverse                 ``reverse_param.axis`` (>= 0): the blob reversed along it.
ReverseTime  ReverseTime             bottoms x (T, N, ...) and lengths (N); for sample n of length
                                     L: output step t < L is input step L - 1 - t; steps t >= L are
                                     the input's (``copy_remaining: true``) or 0.
CTCGreedy-   CTCGreedyDecoder        ``ctc_decoder_layer.cpp``, one bottom (T, N, C): per sample the
Decoder                              best class of each step (first of equal maxima), blanks
                                     (``blank_index``; negative: C - 1) and, with
                                     ``ctc_merge_repeated``, repeats of the previous step dropped;
                                     output (N, T, 1, 1): the labels from the front, then -1.
===========  ======================  =================================================================

Fork details kept in mind:

* ``Lstm`` with a second bottom is refused: the fork then starts from the *previous forward call's*
  final state (``c_T_``, ``h_T_``), and reads sample n's flag at ``clip[t + n]``.
* The fork's CPU forward adds sample 0's recurrent term to every sample when N > 1 (its ``h_to_gate``
  row is not advanced per sample); its GPU forward uses each sample's own. caffe2x computes the GPU
  forward; at N = 1, the fork's deploy batch, the two are the same.
* ``ReverseTime`` leaves steps past a sample's length untouched without ``copy_remaining``: in a
  freshly made net that memory is Caffe's zero-initialised blob, so they are 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node, Shape, couples_samples, shape_function
from caffe2x.graph.reference import op as reference_op
from caffe2x.layers.base import inputs, one_input, same_shape

# axis 0 of their input is time, not the batch: one step alone is not the sequence (Reverse along axis 0
# says so by its attribute, the Lstm is the LSTM op, declared by .recurrent)
couples_samples("ReverseTime", "CTCGreedyDecoder")


# --------------------------------------------------------------------------- Lstm
@layer_handler("Lstm")
def _lstm_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    if len(ins) == 2:
        raise UnsupportedLayerError(layer.name, "Lstm with a clip bottom (state carried over from the previous "
                                                "forward call)", "layer")
    x = one_input(layer, ins)
    if len(x) < 3 or int(np.prod(x[3:])) != 1:
        raise Caffe2xError(f"layer {layer.name!r} (Lstm) needs x shaped (T, N, I), got {list(x)}")
    h = int(layer.lstm_param.num_output)
    if h <= 0:
        raise Caffe2xError(f"layer {layer.name!r} (Lstm) needs lstm_param.num_output")
    i = int(x[2])
    # blob order W_x, W_h, b: the params dict keeps it (a synthesised caffemodel stores them so)
    params = {"x_weight": blobs.get(0, (4 * h, i), "he", "W_x"), "h_weight": blobs.get(1, (4 * h, h), "he", "W_h"),
              "x_bias": blobs.get(2, (4 * h,), "bias", "b")}
    return LayerSpec("LSTM", {"num_output": h}, params)


# --------------------------------------------------------------------------- Transpose
@layer_handler("Transpose")
def _transpose_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    dims = [int(d) for d in layer.transpose_param.dim]
    if sorted(dims) != list(range(len(x))):
        raise Caffe2xError(f"layer {layer.name!r} (Transpose): dim {dims} must name each of the input's {len(x)} "
                           f"axes once")
    return LayerSpec("Permute", {"order": dims})


# --------------------------------------------------------------------------- Reverse
@layer_handler("Reverse")
def _reverse_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    axis = int(layer.reverse_param.axis)
    if not 0 <= axis < len(x):  # the fork checks axis >= 0 and < num_axes (no negative axes)
        raise Caffe2xError(f"layer {layer.name!r} (Reverse): axis {axis} is out of range for a {len(x)}-D blob")
    return LayerSpec("Reverse", {"axis": axis})


shape_function("Reverse")(same_shape)


@reference_op("Reverse")
def _reverse(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.flip(ins[0], node.attrs["axis"]))]


# --------------------------------------------------------------------------- ReverseTime
@layer_handler("ReverseTime")
def _reverse_time_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x, lengths = inputs(layer, ins, 2)
    if len(x) < 2 or len(lengths) != 1 or lengths[0] != x[1]:
        raise Caffe2xError(f"layer {layer.name!r} (ReverseTime) takes x (T, N, ...) and lengths (N), got "
                           f"{list(x)} and {list(lengths)}")
    return LayerSpec("ReverseTime", {"copy_remaining": bool(layer.reverse_time_param.copy_remaining)})


shape_function("ReverseTime")(same_shape)


def reverse_time_index(lengths: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """For output step t of sample n: the input step it copies (T, N) and whether it is reversed (T, N)."""
    length = np.trunc(np.asarray(lengths, dtype=np.float32)).astype(np.int64)[None, :]  # Caffe: int(Dtype)
    t = np.arange(steps, dtype=np.int64)[:, None]
    inside = t < length
    return np.where(inside, length - 1 - t, t), inside


def reverse_time(x: np.ndarray, lengths: np.ndarray, copy_remaining: bool, layer: str = "ReverseTime") -> np.ndarray:
    steps = x.shape[0]
    length = np.trunc(np.asarray(lengths, dtype=np.float32))
    if length.size and (length.min() < 0 or length.max() > steps):
        raise Caffe2xError(f"layer {layer!r} (ReverseTime): a sequence length is outside 0..{steps}: "
                           f"{length.tolist()}")
    src, inside = reverse_time_index(lengths, steps)
    out = np.take_along_axis(x, src.reshape(src.shape + (1,) * (x.ndim - 2)), axis=0)
    keep = inside if not copy_remaining else np.ones_like(inside)
    return np.where(keep.reshape(keep.shape + (1,) * (x.ndim - 2)), out, np.float32(0)).astype(np.float32)


@reference_op("ReverseTime")
def _reverse_time(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [reverse_time(ins[0], ins[1], node.attrs["copy_remaining"], node.name)]


# --------------------------------------------------------------------------- CTCGreedyDecoder
@layer_handler("CTCGreedyDecoder")
def _ctc_greedy_decoder_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    if len(ins) != 1 or len(layer.top) != 1:
        raise UnsupportedLayerError(layer.name, "CTCGreedyDecoder with a label bottom (accuracy, training only)",
                                    "layer")
    x = ins[0]
    if len(x) < 3 or int(np.prod(x[3:])) != 1:
        raise Caffe2xError(f"layer {layer.name!r} (CTCGreedyDecoder) needs scores shaped (T, N, C), got {list(x)}")
    p = layer.ctc_decoder_param
    blank = int(p.blank_index)
    if blank < 0:  # the fork: a negative blank is the last class
        blank = int(x[2]) - 1
    return LayerSpec("CTCGreedyDecoder", {"blank_index": blank, "merge_repeated": bool(p.ctc_merge_repeated)})


@shape_function("CTCGreedyDecoder")
def _ctc_greedy_decoder_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [(ins[0][1], ins[0][0], 1, 1)]


def ctc_greedy_decode(scores: np.ndarray, blank: int, merge_repeated: bool) -> np.ndarray:
    """(T, N, C) scores -> (N, T, 1, 1): per sample the best class of each step (the first of equal
    maxima), blanks and (with ``merge_repeated``) repeats of the previous step's class dropped, the
    labels packed to the front and the rest -1."""
    steps, n = scores.shape[:2]
    best = scores.reshape(steps, n, -1).argmax(axis=2)
    previous = np.concatenate([np.full((1, n), -1), best[:-1]], axis=0)
    keep = (best != blank) & ~(merge_repeated & (best == previous))
    out = np.full((n, steps), -1.0, dtype=np.float32)
    for s in range(n):
        labels = best[keep[:, s], s]
        out[s, :len(labels)] = labels
    return out.reshape(n, steps, 1, 1)


@reference_op("CTCGreedyDecoder")
def _ctc_greedy_decoder(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [ctc_greedy_decode(ins[0], node.attrs["blank_index"], node.attrs["merge_repeated"])]


__all__ = ["reverse_time", "reverse_time_index", "ctc_greedy_decode"]
