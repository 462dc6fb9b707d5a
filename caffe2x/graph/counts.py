"""A graph's parameter counts, the two ways people state them: as the caffemodel stores them and as
model zoos publish them. Printed by ``convert`` and ``inspect``; kept apart from both so that a convert
imports no part of inspect (whose free-dimension analysis a conversion never needs)."""
from __future__ import annotations

from caffe2x.graph.ir import Graph


def caffe_parameter_count(graph: Graph) -> int:
    """Parameters as the caffemodel counts them: the graph's tensors plus each BatchNorm's stored
    moving-average factor (one scalar per BatchNorm, divided out in the graph)."""
    return graph.num_parameters() + sum(1 for n in graph.nodes if n.op == "BatchNorm")


def learned_parameter_count(graph: Graph) -> int:
    """Parameters as model zoos and frameworks publish them: every learned tensor (weights, biases,
    Scale's gamma and beta), BatchNorm's running statistics excluded."""
    return int(sum(graph.tensors[k].size for n in graph.nodes if n.op != "BatchNorm" for k in n.params.values()))
