"""Which layer pins each input dim: the layers whose own shape rule refuses a change of that dim.

:func:`caffe2x.graph.reshape.free_input_dims` says *whether* a dim is free and which sizes it takes by
running the shape rules at trial sizes; a net stops at its first refusing layer there, so a second
layer that also fixes the size (an SSD head's PriorBox with img_size behind an InnerProduct) is never
seen, and a fixed dim does not say why. Here each non-batch input dim is changed alone, to three
sizes larger than read (odd and even), and shapes are propagated past every refusal: a layer whose inputs
changed and whose shape rule refuses them -- an InnerProduct whose weights fix ``C*H*W``, a Reshape
with explicit dims, a PriorBox given img_size, a Crop whose (fixed-size) reference would then run past
its input, an op declared with :func:`caffe2x.graph.ir.pins_input_size` -- is recorded and gives its
read-time output downstream, so every such layer of the net is named. The rules are the layers'
own (plugins' too): nothing here repeats them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from caffe2x.graph.ir import SHAPE_FUNCTIONS, SIZE_PINNED_OPS, Graph, Shape, check_pinned


def _refusals(graph: Graph, inputs: Mapping[str, Sequence[int]]) -> list[str]:
    """The layers refusing their inputs when the net is fed ``inputs`` (each refusing layer's output
    kept at its read-time shape, so the layers after it are checked too)."""
    read = graph.shapes
    shapes: dict[str, Shape] = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
    refused: list[str] = []
    for node in graph.nodes:
        ins = [shapes.get(v, read.get(v, ())) for v in node.inputs]
        was = [read.get(v) for v in node.inputs]
        outs: Sequence[Shape] | None = None
        if any(tuple(i) != tuple(w or ()) for i, w in zip(ins, was)):
            try:
                if node.op in SIZE_PINNED_OPS:
                    check_pinned(node, ins, was)
                outs = SHAPE_FUNCTIONS.lookup(node.op, node.name)(node, ins, graph)
            except Exception:  # a probe: whatever a layer's shape rule (a plugin's too) raises, it refuses
                refused.append(node.name)
                outs = None
            if outs is not None and any(int(d) <= 0 for s in outs for d in s):
                outs = None  # an empty output is a size too small (a minimum), not a pin: carry on as read
        for i, v in enumerate(node.outputs):
            shapes[v] = tuple(int(d) for d in outs[i]) if outs is not None else tuple(read.get(v, ()))
    return refused


def _probes(size: int) -> tuple[int, ...]:
    """Sizes a dim read at ``size`` is tried at: just above (a classifier may take a few sizes around
    the read one), odd and far above (where its InnerProduct no longer fits)."""
    return (size + 1, 2 * size + 1, 3 * size + 2)


def pinning_layers(graph: Graph) -> dict[str, dict[int, tuple[str, ...]]]:
    """For each input, each non-batch axis that some layer pins or constrains: the layers (in net
    order) that refuse a tried change of that axis alone."""
    out: dict[str, dict[int, tuple[str, ...]]] = {}
    for name, shape in graph.inputs.items():
        axes: dict[int, tuple[str, ...]] = {}
        for axis in range(1, len(shape)):
            found: set[str] = set()
            for size in _probes(int(shape[axis])):
                probe = dict(graph.inputs)
                probe[name] = (*shape[:axis], size, *shape[axis + 1:])
                found.update(_refusals(graph, probe))
            if found:
                axes[axis] = tuple(n.name for n in graph.nodes if n.name in found)
        out[name] = axes
    return out


def describe_pins(graph: Graph, pins: Mapping[str, Mapping[int, Sequence[str]]]) -> str:
    """``data H, W: 'fc6' (InnerProduct)`` for every pinned input dim, or ``""``."""
    from caffe2x.graph.reshape import axis_name

    ops = {n.name: n.op for n in graph.nodes}
    parts = []
    for name, axes in pins.items():
        rank = len(graph.inputs[name])
        by_layers: dict[tuple[str, ...], list[str]] = {}
        for axis, layers in axes.items():
            by_layers.setdefault(tuple(layers), []).append(axis_name(rank, axis))
        for layers, dims in by_layers.items():
            who = ", ".join(f"{layer!r} ({ops[layer]})" for layer in layers)
            parts.append(f"{name} {', '.join(dims)}: {who}")
    return "; ".join(parts)
