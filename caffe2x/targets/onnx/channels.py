"""ONNX converter for ShuffleChannel (:mod:`caffe2x.layers.channels`)."""
from __future__ import annotations

import numpy as np

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


@converter("ShuffleChannel")
def _shuffle(b: Builder, node: Node) -> None:
    """(N, C, …) -> (N, g, C/g, rest) -> swap the group axes -> back; the batch stays dynamic."""
    shape = b.shape(node.inputs[0])
    g = node.attrs["group"]
    split = b.const(node, "grouped", np.asarray([0, g, shape[1] // g, -1], dtype=np.int64))
    grouped = b.tmp("Reshape", [b.inp(node), split], node, "grouped")
    swapped = b.tmp("Transpose", [grouped], node, "swapped", perm=[0, 2, 1, 3])
    back = b.const(node, "shape", np.asarray([0, *shape[1:]], dtype=np.int64))
    b.add("Reshape", [swapped, back], b.out(node), node.name)
