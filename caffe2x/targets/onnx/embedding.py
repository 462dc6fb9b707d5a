"""ONNX converter for Embed (:mod:`caffe2x.layers.embedding`): Cast to int64 (truncates toward zero,
like Caffe's ``static_cast<int>``), Gather rows of the weight, add the bias."""
from __future__ import annotations

from onnx import TensorProto

from caffe2x.graph.ir import Node
from caffe2x.targets.onnx.ops import Builder, converter


@converter("Embed")
def _embed(b: Builder, node: Node) -> None:
    index = b.tmp("Cast", [b.inp(node)], node, "index", to=TensorProto.INT64)
    if "bias" not in node.params:
        b.add("Gather", [b.param(node, "weight"), index], b.out(node), node.name, axis=0)
        return
    rows = b.tmp("Gather", [b.param(node, "weight"), index], node, "rows", axis=0)
    b.add("Add", [rows, b.param(node, "bias")], b.out(node), node.name)
