"""Cut a Caffe net down to what some blobs need, before anything is built.

Why before: the point of ``--outputs`` is to export the part of a net caffe2x *can* convert, e.g. the
convolutional trunk of a Faster R-CNN whose Python proposal layer cannot be converted, or a backbone
without its head. Cutting the Caffe layer list (not the finished graph) means the layers past the cut
are never read, shaped or checked, and net inputs only they consume (Faster R-CNN's ``im_info``) need
no shape.

Works on anything with Caffe's ``LayerParameter`` attributes (``name``, ``type``, ``bottom``, ``top``),
so it is independent of the schema a model was parsed with.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from caffe2x.errors import Caffe2xError, option


def _split_request(request: str) -> tuple[str, str | None]:
    """``blob`` (its final value) or ``blob@layer`` (the value ``layer`` writes to ``blob``)."""
    blob, sep, layer = request.partition("@")
    return blob, (layer if sep else None)


def needed_layers(layers: Sequence[Any], outputs: Sequence[str], inputs: Sequence[str] = ()) -> list[Any]:
    """The layers (in net order) that the requested blobs depend on.

    A walk backwards through the layer list: a layer is kept when it writes a blob still needed at that
    point; keeping it makes its bottoms needed. In-place layers (top == bottom) keep the blob needed, so
    the whole chain of writes to it is kept, as Caffe would compute it.
    """
    if isinstance(outputs, str) or not all(isinstance(o, str) and o for o in outputs):
        raise Caffe2xError("outputs must be a list of blob names")
    known_tops = {t for l in layers for t in l.top} | set(inputs)
    names = {l.name for l in layers}
    starts: dict[int, set[str]] = {}  # layer index after which a request becomes live -> blobs
    end = len(layers)
    for request in outputs:
        blob, at_layer = _split_request(request)
        if blob not in known_tops:
            raise Caffe2xError(f"no blob named {blob!r} in the net (asked for by outputs)")
        if at_layer is None:
            starts.setdefault(end, set()).add(blob)
            continue
        if at_layer not in names:
            raise Caffe2xError(f"no layer named {at_layer!r} in the net (asked for by outputs {request!r})")
        index = next(i for i, l in enumerate(layers) if l.name == at_layer)
        if blob not in layers[index].top:
            raise Caffe2xError(f"layer {at_layer!r} does not write blob {blob!r} (asked for by outputs {request!r})")
        starts.setdefault(index + 1, set()).add(blob)
    needed: set[str] = set(starts.get(end, set()))
    kept: list[Any] = []
    for i in range(end - 1, -1, -1):
        needed |= starts.get(i + 1, set())
        layer = layers[i]
        if not any(t in needed for t in layer.top):
            continue
        kept.append(layer)
        needed -= set(layer.top)
        needed |= set(layer.bottom)
    return kept[::-1]


def cut_before(layers: Sequence[Any], index: int, input_types: Sequence[str] = ("Input",)) -> list[str]:
    """The ``--outputs`` that convert everything before ``layers[index]``: the blobs written by the
    earlier layers (not net inputs) that it or any later layer reads, in the order first written."""
    written: dict[str, None] = {}
    for l in layers[:index]:
        if l.type in input_types or not len(l.bottom):
            continue
        for t in l.top:
            written.setdefault(t, None)
    later = {b for l in layers[index:] for b in l.bottom}
    return [b for b in written if b in later]


def python_layer_error(layer: Any, cut: bool, suggestion: Sequence[str] = ()) -> Caffe2xError:
    """The error for a Python layer that computes something inside the (kept part of the) net, naming
    its module and class and (``suggestion``) the ``--outputs`` that convert everything before it."""
    p = layer.python_param
    where = f"module {p.module!r}, class {p.layer!r}" if p.module or p.layer else "no python_param"
    if cut:
        hint = "it is needed by the requested outputs; cut the net before it with a different {option('outputs')}"
    elif suggestion:
        hint = f"convert everything before it with {option('outputs', list(suggestion))}"
    else:
        hint = f"cut the net before it with {option('outputs', 'BLOB[,BLOB...]', api='[BLOB, ...]')} (e.g. the backbone's last blob)"
    return Caffe2xError(f"layer {layer.name!r} is a Python layer ({where}) caffe2x does not know: caffe2x cannot "
                        f"convert Python code; {hint}, or register a handler for it with caffe2x.register_layer")


def prune_graph(graph: Any, outputs: Sequence[str]) -> Any:
    """A copy of a finished :class:`~caffe2x.graph.ir.Graph` keeping only what ``outputs`` need.

    For graphs that arrive already built (a caffe2x ``.safetensors`` file); Caffe nets are cut before
    building by :func:`needed_layers`.
    """
    if isinstance(outputs, str) or not all(isinstance(o, str) and o for o in outputs):
        raise Caffe2xError("outputs must be a list of blob names")
    wanted = [graph.value(o) for o in outputs]
    needed = set(wanted)
    kept = []
    for node in reversed(graph.nodes):
        if any(v in needed for v in node.outputs):
            kept.append(node)
            needed |= set(node.inputs)
    kept.reverse()
    keys = {key for node in kept for key in node.params.values()}
    pruned = graph.copy()
    pruned.tensors = {k: v for k, v in graph.tensors.items() if k in keys}
    pruned.nodes = [n for n in pruned.nodes if n.name in {k.name for k in kept}]
    pruned.inputs = {name: shape for name, shape in graph.inputs.items() if name in needed}
    live = set(pruned.inputs) | {v for node in kept for v in node.outputs}
    pruned.shapes = {v: s for v, s in graph.shapes.items() if v in live}
    pruned.blobs = {b: v for b, v in graph.blobs.items() if v in live}
    pruned.outputs = list(dict.fromkeys(wanted))
    return pruned
