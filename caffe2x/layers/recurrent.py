"""BVLC's recurrent layers LSTM and RNN (``lstm_layer.cpp``, ``rnn_layer.cpp``, ``lstm_unit_layer.cpp``),
with ``expose_hidden: false`` and no static input: bottoms ``x`` (T, N, ...) and ``cont`` (T, N); the
hidden state starts at zero and ``cont_t = 0`` starts a new sequence.

======  =================  ======================================================================
op      params             per timestep t (``x_t`` flattened from axis 2, ``h_c = cont_t * h_{t-1}``)
======  =================  ======================================================================
LSTM    W_xc (4H, I),      ``a = W_hc h_c + (W_xc x_t + b_c)``, gates in Caffe's order
        b_c (4H),          ``i, f, o, g = sig(a_0), sig(a_1), sig(a_2), tanh(a_3)``;
        W_hc (4H, H)       ``c_t = cont_t * f * c_{t-1} + i * g`` (f is 0 where cont is 0),
                           ``h_t = o * tanh(c_t)``; output h (T, N, H)
RNN     W_xh (H, I),       ``h_t = tanh(W_hh h_c + (W_xh x_t + b_h))``,
        b_h (H), W_hh      ``o_t = tanh(W_ho h_t + b_o)``; output o (T, N, num_output)
        (H, H), W_ho (O,
        H), b_o (O)
======  =================  ======================================================================

The OCR fork's ``Lstm`` (:mod:`.sequence`) is this LSTM op with no ``cont`` input: every ``cont_t`` is
``t > 0`` (zero initial state, one sequence per sample).

The parameter order is the order the forks' unrolled net owns them (x_transform's weight and bias,
then the recurrent weight(s)); the roles are ``x_weight``, ``x_bias``, ``h_weight`` (and ``o_weight``,
``o_bias`` for RNN).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError, UnsupportedLayerError
from caffe2x.graph.ir import Graph, Node, Shape, couples_samples, shape_function
from caffe2x.graph.reference import op as reference_op

couples_samples("LSTM", "RNN")  # axis 0 is time: one step alone is not the sequence


@layer_handler("LSTM", "RNN")
def _recurrent_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    p = layer.recurrent_param
    if p.expose_hidden:
        raise UnsupportedLayerError(layer.name, f"{layer.type} with expose_hidden", "layer")
    if len(ins) == 3:
        raise UnsupportedLayerError(layer.name, f"{layer.type} with a static input", "layer")
    if len(ins) != 2:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes x and cont, got {len(ins)} input(s)")
    x, cont = ins
    if len(x) < 3 or tuple(cont) != tuple(x[:2]):
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}): x must be (T, N, ...) and cont (T, N), got "
                           f"{list(x)} and {list(cont)}")
    h = int(p.num_output)
    if h <= 0:
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) needs num_output")
    i = int(np.prod(x[2:]))
    gates = 4 * h if layer.type == "LSTM" else h
    params = {"x_weight": blobs.get(0, (gates, i), "he", "W_x"), "x_bias": blobs.get(1, (gates,), "bias", "b_x"),
              "h_weight": blobs.get(2, (gates, h), "he", "W_h")}
    if layer.type == "RNN":
        params["o_weight"] = blobs.get(3, (h, h), "he", "W_ho")
        params["o_bias"] = blobs.get(4, (h,), "bias", "b_o")
    return LayerSpec(layer.type, {"num_output": h}, params)


@shape_function("LSTM", "RNN")
def _recurrent_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x = ins[0]
    return [(x[0], x[1], node.attrs["num_output"])]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-v))).astype(np.float32)


def lstm(x: np.ndarray, cont: np.ndarray | None, wx: np.ndarray, bx: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """``cont`` None: one sequence per sample (``cont_t = t > 0``, the OCR fork's Lstm)."""
    t_steps, n = x.shape[:2]
    if cont is None:
        cont = (np.arange(t_steps) > 0).astype(np.float32)[:, None].repeat(n, axis=1)
    hid = wh.shape[1]
    xw = x.reshape(t_steps, n, -1) @ wx.T + bx
    h = np.zeros((n, hid), np.float32)
    c = np.zeros((n, hid), np.float32)
    out = np.empty((t_steps, n, hid), np.float32)
    for t in range(t_steps):
        keep = cont[t].reshape(n, 1).astype(np.float32)
        a = (keep * h) @ wh.T + xw[t]
        i, f, o = _sigmoid(a[:, :hid]), _sigmoid(a[:, hid:2 * hid]), _sigmoid(a[:, 2 * hid:3 * hid])
        g = np.tanh(a[:, 3 * hid:])
        f = np.where(keep == 0, np.float32(0), keep * f)
        c = f * c + i * g
        h = o * np.tanh(c)
        out[t] = h
    return out


def rnn(x: np.ndarray, cont: np.ndarray, wx: np.ndarray, bx: np.ndarray, wh: np.ndarray, wo: np.ndarray,
        bo: np.ndarray) -> np.ndarray:
    t_steps, n = x.shape[:2]
    hid = wh.shape[1]
    xw = x.reshape(t_steps, n, -1) @ wx.T + bx
    h = np.zeros((n, hid), np.float32)
    out = np.empty((t_steps, n, wo.shape[0]), np.float32)
    for t in range(t_steps):
        keep = cont[t].reshape(n, 1).astype(np.float32)
        h = np.tanh((keep * h) @ wh.T + xw[t])
        out[t] = np.tanh(h @ wo.T + bo)
    return out


@reference_op("LSTM")
def _lstm(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    p = {r: graph.param(node, r) for r in node.params}
    return [lstm(ins[0], ins[1] if len(ins) > 1 else None, p["x_weight"], p["x_bias"], p["h_weight"])]


@reference_op("RNN")
def _rnn(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    p = {r: graph.param(node, r) for r in node.params}
    return [rnn(ins[0], ins[1], p["x_weight"], p["x_bias"], p["h_weight"], p["o_weight"], p["o_bias"])]
