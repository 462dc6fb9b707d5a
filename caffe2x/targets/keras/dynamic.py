"""Symbolic input sizes in the Keras model: which builders follow a size known only at run time.

:func:`plan` picks the input axes to leave as ``None`` in ``keras.Input`` (the free ones of
:func:`caffe2x.graph.reshape.symbolic_axes`, when every layer on a value whose shape varies is built without a
baked-in size), so a fully convolutional net's model, ``.keras`` and ``.h5`` files, SavedModel and
TFLite conversion take any H x W. Pooling (:class:`~.layers.CaffePooling2D`), Crop
(:class:`~.shape.CaffeCropLike`), Interp and PriorBox (:mod:`.dynamic_layers`) and Reshape
(:class:`~.shape.CaffeRuleReshape`) compute Caffe's geometry from the run-time shape; LRN (across or
within channels) only pads by its window. A net with anything else on a varying value keeps the sizes
it was read at (any batch).
"""
from __future__ import annotations

from caffe2x.graph.formulas import prior_follows_input
from caffe2x.graph.ir import Graph, Node
from caffe2x.graph.reshape import symbolic_axes

#: ops whose builder never bakes in a size that can vary: only attributes and channel counts
_AGNOSTIC = {"Convolution", "Deconvolution", "BatchNorm", "Scale", "ReLU", "ELU", "PReLU", "Sigmoid", "TanH",
             "Dropout", "Softmax", "Concat", "Eltwise", "LRN", "Permute", "Normalize", "AbsVal", "BNLL", "Exp", "Log",
             "Threshold", "Clip", "Swish", "Power", "UpsampleNearest",
             # these two compute their sizes at run time when their input varies
             "Pooling", "Crop"}


def size_agnostic(node: Node, graph: Graph | None = None) -> bool:
    """Whether the Keras builder of ``node`` follows input sizes known only at run time (``graph``:
    for the rank of its input, where the axis matters)."""
    if node.op == "Interp":  # Caffe's rule on the run-time size (.dynamic_layers); older graphs have none
        return "rule" in node.attrs
    if node.op == "Reshape":  # Caffe's rule on the run-time shape (CaffeRuleReshape)
        return bool(node.attrs.get("caffe_rule"))
    if node.op == "PriorBox":  # the image size follows the image input (.dynamic_layers)
        return prior_follows_input(node.attrs) and len(node.inputs) > 1
    if node.op in ("Softmax", "Concat"):  # the channel axis, or any axis of a tensor kept in Caffe's order
        return node.attrs["axis"] == 1 or (graph is not None and len(graph.shapes[node.inputs[0]]) != 4)
    if node.op == "DetectionOutput":  # its prior count from the run-time shape
        return True
    if node.op == "Flatten":  # keras' Flatten to (N, -1); another output rank reshapes to the read shape
        if graph is None:
            return False
        ranks = len(graph.shapes[node.inputs[0]]), len(graph.shapes[node.outputs[0]])
        return ranks[1] == 2 or ranks == (4, 4)
    return node.op in _AGNOSTIC


def plan(graph: Graph) -> tuple[dict[str, list[int]], dict[str, set[int]]]:
    """(input -> Caffe axes left ``None``, varying value -> its varying Caffe axes)."""
    return symbolic_axes(graph, lambda node: size_agnostic(node, graph))
