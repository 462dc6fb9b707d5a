"""The graph as a functional ``keras.Model`` (:func:`to_model`), built op by op from :data:`~.ops.OPS`.

Building is the expensive part of the Keras target (every layer's ``build``, variable creation and
initialisation: seconds for ResNet-50), so one build serves every model of a graph: :func:`build_net`
keeps the Keras tensor of each graph value, and :meth:`BuiltNet.model` cuts a model with any outputs
from it without building a layer again. :func:`offer` / :func:`take` hand the net a Keras write built
to the next load of the same graph (``caffe2x validate`` writes the ``.h5``, then loads it back into
a model whose every weight is zeroed first, so reusing the layers proves exactly what a fresh build
would).
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from caffe2x.graph.ir import Graph
from caffe2x.graph import pages
from caffe2x.graph.reference import resolve_outputs
from caffe2x.targets.keras import dynamic
from caffe2x.targets.keras.ops import OPS, BuildContext, keras_name


@dataclass
class BuiltNet:
    """One functional build of a graph: its ``keras.Input`` tensors and the Keras tensor of every
    graph value (4-D values NHWC)."""

    inputs: list[Any]
    tensors: dict[str, Any]
    name: str

    def model(self, graph: Graph, outputs: str | Sequence[str] | None = None) -> keras.Model:
        """A model over this net's layers returning the Caffe blobs ``outputs`` (see :func:`to_model`);
        no layer is built again, the models share their variables."""
        names = resolve_outputs(graph, outputs)
        outs = [self.tensors[graph.value(n)] for n in names]
        return keras.Model(inputs=self.inputs[0] if len(self.inputs) == 1 else self.inputs,
                           outputs=outs[0] if len(outs) == 1 else outs, name=self.name)


def build_net(graph: Graph) -> BuiltNet:
    """Build every layer of ``graph`` once, with the graph's weights (each builder creates its layer's
    variables holding them). Input axes the net takes at any size are ``None`` (:mod:`.dynamic`). The
    pages of the mapped caffemodel a layer's weights were read from are handed back to the system once
    its variables hold them (:func:`caffe2x.graph.pages.release`)."""
    symbolic, varying = dynamic.plan(graph)
    ctx = BuildContext(graph, varying)
    tensors: dict[str, Any] = {}
    inputs = []
    for blob, read in graph.inputs.items():
        free = symbolic.get(blob, [])
        shape = [None if a in free else d for a, d in enumerate(read)]
        per_sample = (shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape[1:])
        t = keras.Input(shape=per_sample, name=ctx.input_name(blob))
        tensors[blob] = t
        inputs.append(t)
    for node in graph.nodes:
        outs = OPS.lookup(node.op, node.name)(ctx, node, [tensors[v] for v in node.inputs])
        for value, t in zip(node.outputs, outs):
            tensors[value] = t
        # the layer's variables hold their own copy now: the caffemodel pages it read go back to the
        # system (the views stay valid; see caffe2x.graph.pages)
        for key in node.params.values():
            if key in graph.tensors:
                pages.release(graph.tensors[key])
    return BuiltNet(inputs, tensors, keras_name(graph.name or "caffe2x"))


def to_model(graph: Graph, outputs: str | Sequence[str] | None = None) -> keras.Model:
    """A functional Keras model computing ``graph`` with Caffe's semantics; 4-D inputs/outputs are NHWC.

    ``outputs`` names Caffe blobs (their final values, as pycaffe shows them); default: the net's
    outputs. One output gives a single-output model, several a list in the order given.
    """
    return build_net(graph).model(graph, outputs)


# --------------------------------------------------------------------------- write -> load hand-off
@dataclass
class _Offer:
    graph: weakref.ref[Graph]
    structure: str  # the graph's JSON structure when the net was built: a changed graph is not served
    net: BuiltNet
    model: keras.Model  # the model the write used (the graph's default outputs)
    token: int


_offered: _Offer | None = None
_tokens = itertools.count()


def offer(graph: Graph, net: BuiltNet, model: keras.Model) -> None:
    """Keep the net a write just built for the next :func:`take` of the same graph.

    One net at most is kept, and only until it is taken, the next offer, or ``graph`` is garbage
    collected (a weak reference): the hand-off never keeps a graph alive, and never holds more than
    the one model a load would otherwise build again."""
    global _offered
    _offered = None  # the previous net goes before this one is kept
    token = next(_tokens)
    _offered = _Offer(weakref.ref(graph), graph.to_json(), net, model, token)
    weakref.finalize(graph, _drop, token)


def _drop(token: int) -> None:
    global _offered
    if _offered is not None and _offered.token == token:
        _offered = None


def take(graph: Graph) -> tuple[BuiltNet, keras.Model] | None:
    """The net :func:`offer` kept for this very graph object, unchanged since (then no longer kept),
    or None. Whoever takes it must zero every weight before loading a file into it."""
    global _offered
    found, _offered = _offered, None
    if found is None or found.graph() is not graph or found.structure != graph.to_json():
        return None
    return found.net, found.model


def release() -> None:
    """Drop an offered net (its variables are freed with it)."""
    global _offered
    _offered = None
