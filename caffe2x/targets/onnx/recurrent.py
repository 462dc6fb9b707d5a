"""BVLC's LSTM and RNN in ONNX opset 17, unrolled over the (static) T timesteps: ONNX's own LSTM/RNN
operators have no per-step ``cont`` reset, so each step is spelled out with Caffe's gate order
(i, f, o, g) (formulas: :mod:`caffe2x.layers.recurrent`). Without a ``cont`` input (the OCR fork's Lstm)
each sample is one sequence from a zero state: no reset nodes."""
from __future__ import annotations

import numpy as np
from onnx import helper

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


@converter("LSTM", "RNN")
def _recurrent(b: Builder, node: Node) -> None:
    steps, _, *rest = b.shape(node.inputs[0])
    hid = node.attrs["num_output"]
    lstm = node.op == "LSTM"
    has_cont = len(node.inputs) > 1
    x = b.inp(node, 0)
    if len(rest) > 1:  # (T, N, ...) -> (T, N, I): Reshape's 0 keeps T and N
        x = b.tmp("Reshape", [x, b.shape_const(node, "x_shape", [0, 0, -1])], node, "x_flat")
    wx_t = b.tmp("Transpose", [b.param(node, "x_weight")], node, "wx_t", perm=[1, 0])
    wh_t = b.tmp("Transpose", [b.param(node, "h_weight")], node, "wh_t", perm=[1, 0])
    xw = b.tmp("Add", [b.tmp("MatMul", [x, wx_t], node, "xw_mul"), b.param(node, "x_bias")], node, "xw")
    if not lstm:
        wo_t = b.tmp("Transpose", [b.param(node, "o_weight")], node, "wo_t", perm=[1, 0])
    # zero state shaped (N, H): 0 * the first step's projected input, first H columns
    first = b.tmp("Gather", [xw, b.shape_const(node, "t_first", [0])], node, "xw0", axis=0)
    first = b.tmp("Squeeze", [first, b.shape_const(node, "ax0", [0])], node, "xw0_s")
    zero = b.tmp("Mul", [b.tmp("Slice", [first, b.shape_const(node, "z0", [0]), b.shape_const(node, "z1", [hid]),
                                         b.shape_const(node, "za", [1])], node, "cols"),
                         b.const(node, "zero", np.array(0, dtype=np.float32))], node, "state0")
    h, c = zero, zero
    outs = []
    for t in range(steps):
        pick = b.shape_const(node, f"t{t}", [t])
        xt = b.tmp("Squeeze", [b.tmp("Gather", [xw, pick], node, f"xw_{t}", axis=0), b.shape_const(node, f"sq{t}", [0])],
                   node, f"xw_{t}_s")
        if has_cont:
            keep = b.tmp("Transpose", [b.tmp("Gather", [b.inp(node, 1), pick], node, f"cont_{t}", axis=0)], node,
                         f"keep_{t}", perm=[1, 0])                                               # (N, 1)
            hc = b.tmp("Mul", [keep, h], node, f"hc_{t}")
        else:  # the OCR fork's Lstm: cont_t = t > 0, and the state starts at zero, so h_c = h
            hc = h
        a = b.tmp("Add", [b.tmp("MatMul", [hc, wh_t], node, f"hw_{t}"), xt], node, f"a_{t}")
        if lstm:
            parts = [b.fresh(f"{node.name}/gate{k}_{t}") for k in range(4)]
            b.nodes.append(helper.make_node("Split", [a, b.shape_const(node, f"split{t}", [hid] * 4)], parts,
                                            name=parts[0], axis=1))
            i = b.tmp("Sigmoid", [parts[0]], node, f"i_{t}")
            f = b.tmp("Sigmoid", [parts[1]], node, f"fs_{t}")
            if has_cont:
                f = b.tmp("Mul", [keep, f], node, f"f_{t}")
                f = b.tmp("Where", [b.tmp("Equal", [keep, b.const(node, f"z{t}", np.array(0, dtype=np.float32))],
                                          node, f"reset_{t}"), b.const(node, f"zf{t}", np.array(0, dtype=np.float32)),
                                    f], node, f"fr_{t}")
            o = b.tmp("Sigmoid", [parts[2]], node, f"o_{t}")
            g = b.tmp("Tanh", [parts[3]], node, f"g_{t}")
            c = b.tmp("Add", [b.tmp("Mul", [f, c], node, f"fc_{t}"), b.tmp("Mul", [i, g], node, f"ig_{t}")], node,
                      f"c_{t}")
            h = b.tmp("Mul", [o, b.tmp("Tanh", [c], node, f"tc_{t}")], node, f"h_{t}")
            outs.append(h)
        else:
            h = b.tmp("Tanh", [a], node, f"h_{t}")
            outs.append(b.tmp("Tanh", [b.tmp("Add", [b.tmp("MatMul", [h, wo_t], node, f"ho_{t}"),
                                                     b.param(node, "o_bias")], node, f"oa_{t}")], node, f"o_{t}"))
    stacked = [b.tmp("Unsqueeze", [o_, b.shape_const(node, f"us{t}", [0])], node, f"out_{t}")
               for t, o_ in enumerate(outs)]
    if len(stacked) == 1:
        b.add("Identity", stacked, b.out(node), node.name)
    else:
        b.add("Concat", stacked, b.out(node), node.name, axis=0)
