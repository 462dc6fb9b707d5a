"""``to_keras(graph, trainable=True)``: the converted model made fit for training.

Keras' BatchNormalization already normalises with batch statistics under ``training=True`` and with the
stored ones otherwise, and a layer with ``trainable = False`` stays in inference mode. What changes
against the default model: each BatchNormalization's ``momentum`` becomes the Caffe layer's
``moving_average_fraction`` (Keras: ``moving = momentum * moving + (1 - momentum) * batch``, Caffe's
update once its stored factor has saturated; default 0.999 instead of Keras' 0.99). Keras updates the
moving variance with the biased batch variance where Caffe uses the unbiased one (a factor m/(m-1) on
the batch term, m = values per channel). Every weight is trainable; Dropout drops under
``training=True``. Inference (``training=False``) is exactly the default model's.
"""
from __future__ import annotations

import keras

from caffe2x.graph.ir import Graph
from caffe2x.targets.keras.ops import BuildContext

__all__ = ["DEFAULT_MOVING_AVERAGE_FRACTION", "make_trainable"]

#: Caffe's default BatchNormParameter.moving_average_fraction
DEFAULT_MOVING_AVERAGE_FRACTION = 0.999


def make_trainable(model: keras.Model, graph: Graph) -> keras.Model:
    """Set Caffe's moving-average fraction as each BatchNormalization's momentum and make every layer of
    ``model`` (built from ``graph`` by ``to_model``) trainable. Returns ``model``."""
    ctx = BuildContext(graph)
    for node in graph.nodes:
        if node.op == "BatchNorm":
            layer = model.get_layer(ctx.name(node))
            layer.momentum = float(node.attrs.get("moving_average_fraction", DEFAULT_MOVING_AVERAGE_FRACTION))
    for layer in model.layers:
        layer.trainable = True
    return model
