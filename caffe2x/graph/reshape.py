"""Caffe's reshape semantics: a net read at one input size runs at any size its layers take.

Caffe (``net.blobs['data'].reshape(...)``; OpenCV's ``setInput`` likewise) recomputes every blob's shape
from a new input and runs: MTCNN's P-Net declared at 12x12 runs over an image pyramid, FCN, HED and
OpenPose at the photo's size. Here the same happens in three steps:

* :func:`shapes_at` runs every layer's shape rule on other input shapes (the graph is not changed); a
  layer that cannot take them (an InnerProduct whose weights fix its input, a pooling window larger
  than its input, a Crop running past its input, an op declared with
  :func:`caffe2x.graph.ir.pins_input_size`) raises a one-line error naming it.
* :func:`reshaped` is the graph at those shapes (nodes and tensors shared), which the numpy reference
  runs; :func:`check_input_shapes` adds which sizes the net does take to the error.
* :func:`free_input_dims` says which input dims are free (any size from some minimum on) and which
  sizes a fixed dim accepts, found by probing the shape rules: ``caffe2x inspect`` shows it and the
  ONNX and Keras targets make the free dims symbolic.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import SHAPE_FUNCTIONS, SIZE_PINNED_OPS, Graph, Node, Shape, check_pinned

#: how a rank-4 input's axes are called (Caffe's N, C, H, W); other ranks: N, d1, d2, ...
AXIS_NAMES_4D = ("N", "C", "H", "W")
#: a dim is free when the net takes each of these sizes (from the size ``v`` it was read at): larger,
#: odd and even, and far larger; below ``v`` the smallest size it takes is searched for
_FREE_PROBES = (lambda v: v + 1, lambda v: v + 2, lambda v: v + 3, lambda v: 2 * v + 1, lambda v: 3 * v + 2)
#: largest number of sizes tried for one dim when listing the sizes a constrained dim takes
_SCAN_LIMIT = 1024


def axis_name(rank: int, axis: int) -> str:
    """The name an input axis is shown and reported by: N, C, H, W for a 4-D input."""
    return AXIS_NAMES_4D[axis] if rank == 4 else ("N" if axis == 0 else f"d{axis}")


def shapes_at(graph: Graph, inputs: Mapping[str, Sequence[int]]) -> dict[str, Shape]:
    """Every value's shape when the net is fed inputs of these shapes (by input name), as Caffe's
    reshape computes them; raises a :class:`Caffe2xError` naming the first layer that cannot take its
    input. ``graph`` is not changed."""
    shapes: dict[str, Shape] = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
    read = graph.shapes
    for node in graph.nodes:
        ins = [shapes[v] for v in node.inputs]
        if node.op in SIZE_PINNED_OPS:
            check_pinned(node, ins, [read.get(v) for v in node.inputs])
        try:  # the node's attributes were checked when the graph was read: only its shape rule runs
            outs = SHAPE_FUNCTIONS.lookup(node.op, node.name)(node, ins, graph)
        except Caffe2xError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise Caffe2xError(f"layer {node.name!r} ({node.op}) cannot take inputs shaped "
                               f"{[list(s) for s in ins]} ({type(exc).__name__}: {exc})") from None
        for v, s in zip(node.outputs, outs):
            s = tuple(int(d) for d in s)
            if any(d <= 0 for d in s):
                raise Caffe2xError(f"layer {node.name!r} ({node.op}) gives blob {v.split('@')[0]!r} the empty "
                                   f"shape {list(s)}")
            shapes[v] = s
    return shapes


def _accepts(graph: Graph, inputs: Mapping[str, Sequence[int]]) -> bool:
    try:
        shapes_at(graph, inputs)
    except Exception:  # a probe: whatever a layer's shape rule (a plugin's too) raises, the size is not taken
        return False
    return True


@dataclass(frozen=True)
class InputDim:
    """One axis of one input: its size as read, whether it is free, and the sizes it takes.

    ``free``: the net takes every size from ``minimum`` on (as far as probing shows: each of several
    larger sizes, odd and even, works); ``accepts`` is then ``((minimum, None),)``. Otherwise it lists
    the ranges ``(lo, hi)`` of sizes the net takes up to twice the read size (the read size among them)."""

    input: str
    axis: int
    name: str
    size: int
    free: bool
    minimum: int
    accepts: tuple[tuple[int, int | None], ...]

    def describe(self) -> str:
        """``H free (>= 12)``, ``C fixed 3``, ``H 193..224``: what the dim takes, in a few words."""
        if self.free:
            return f"{self.name} free (>= {self.minimum})" if self.minimum > 1 else f"{self.name} free"
        if self.accepts == ((self.size, self.size),):
            return f"{self.name} fixed {self.size}"
        return f"{self.name} {_ranges(self.accepts)}"

    def to_json(self) -> dict[str, object]:
        return {"axis": self.axis, "name": self.name, "size": self.size, "free": self.free,
                "minimum": self.minimum, "accepts": [list(r) for r in self.accepts]}


def _ranges(ranges: Sequence[tuple[int, int | None]], most: int = 6) -> str:
    parts = [str(lo) if lo == hi else f"{lo}..{'' if hi is None else hi}" for lo, hi in ranges[:most]]
    if len(ranges) > most:
        parts.append("...")
    return ", ".join(parts)


def free_input_dims(graph: Graph) -> dict[str, list[InputDim]]:
    """For each input, what each of its dims takes (see :class:`InputDim`), each dim probed with the
    others at the sizes the net was read at."""
    out: dict[str, list[InputDim]] = {}
    for name, shape in graph.inputs.items():
        dims = []
        for axis, size in enumerate(shape):
            def ok(v: int, axis: int = axis) -> bool:
                probe = dict(graph.inputs)
                probe[name] = (*shape[:axis], v, *shape[axis + 1:])
                return _accepts(graph, probe)

            free = all(ok(p(size)) for p in _FREE_PROBES)
            minimum = size
            while minimum > 1 and ok(minimum - 1):
                minimum -= 1
            accepts: list[tuple[int, int | None]] = []
            if free:
                accepts = [(minimum, None)]
            else:
                top = min(2 * size + 8, _SCAN_LIMIT) if size < _SCAN_LIMIT else size
                lo = None
                for v in range(max(1, min(minimum, top)), top + 1):
                    good = v == size or (v >= minimum and v <= size) or ok(v)
                    if good and lo is None:
                        lo = v
                    if not good and lo is not None:
                        accepts.append((lo, v - 1))
                        lo = None
                if lo is not None:
                    accepts.append((lo, top))
            dims.append(InputDim(name, axis, axis_name(len(shape), axis), int(size), free, minimum, tuple(accepts)))
        out[name] = dims
    return out


def describe_inputs(dims: Mapping[str, list[InputDim]]) -> str:
    """``data: N free, C fixed 3, H free (>= 12), W free (>= 12)`` for every input."""
    return "; ".join(f"{name}: " + ", ".join(d.describe() for d in ds) for name, ds in dims.items())


def check_input_shapes(graph: Graph, inputs: Mapping[str, Sequence[int]]) -> dict[str, Shape]:
    """:func:`shapes_at`, with the input shapes checked first (the net's rank, every dim positive) and a
    layer's refusal completed by the sizes the net does take."""
    for name, shape in inputs.items():
        want = graph.inputs[name]
        if len(shape) != len(want):
            raise Caffe2xError(f"input {name!r} has shape {list(shape)}, the net takes a {len(want)}-D input "
                               f"(read as {list(want)})")
        for axis, d in enumerate(shape):
            if int(d) <= 0:
                raise Caffe2xError(f"input {name!r} dim {axis} ({axis_name(len(shape), axis)}) is {int(d)} in "
                                   f"shape {list(shape)}: every dim must be at least 1")
    try:
        return shapes_at(graph, inputs)
    except Caffe2xError as exc:
        given = ", ".join(f"{k} {list(v)}" for k, v in inputs.items() if tuple(v) != tuple(graph.inputs[k]))
        raise Caffe2xError(f"the net cannot run on input {given}: {exc}; it takes "
                           f"{describe_inputs(free_input_dims(graph))}") from None


def reshaped(graph: Graph, inputs: Mapping[str, Sequence[int]]) -> Graph:
    """The graph at other input shapes (nodes and tensors shared, every value's shape recomputed), or
    ``graph`` itself when the shapes are the ones it has. Raises as :func:`check_input_shapes`."""
    new = {k: tuple(int(d) for d in inputs.get(k, v)) for k, v in graph.inputs.items()}
    if new == {k: tuple(v) for k, v in graph.inputs.items()}:
        return graph
    shapes = check_input_shapes(graph, new)
    return dataclasses.replace(graph, inputs=new, shapes=shapes, nodes=list(graph.nodes),
                               outputs=list(graph.outputs), blobs=dict(graph.blobs))


def varying_values(graph: Graph, inputs: Sequence[tuple[str, int]]) -> dict[str, set[int]] | None:
    """The values whose shape changes when the given input dims (``(input, axis)`` pairs) change, each
    with the axes that change, or None when the net does not take the probe sizes. Found by comparing
    the shapes at two probe sizes with the read ones: what a target must not bake in as constants."""
    changed: dict[str, set[int]] = {}
    for grow in (1, 2):
        probe = {k: list(v) for k, v in graph.inputs.items()}
        for name, axis in inputs:
            probe[name][axis] = probe[name][axis] * (grow + 1) + grow
        try:
            shapes = shapes_at(graph, probe)
        except Exception:  # a probe (see _accepts)
            return None
        for v, s in shapes.items():
            read = tuple(graph.shapes.get(v, ()))
            axes = {i for i, d in enumerate(s) if i >= len(read) or read[i] != d} | set(range(len(s), len(read)))
            if axes:
                changed.setdefault(v, set()).update(axes)
    return changed


def free_axes(graph: Graph) -> dict[str, list[int]]:
    """For each input, its free axes but the batch (see :class:`InputDim`), by the quick probes only
    (no search for the minimum size): what a target makes symbolic."""
    out: dict[str, list[int]] = {}
    for name, shape in graph.inputs.items():
        axes = []
        for axis in range(1, len(shape)):
            def ok(v: int) -> bool:
                probe = dict(graph.inputs)
                probe[name] = (*shape[:axis], v, *shape[axis + 1:])
                return _accepts(graph, probe)

            if all(ok(p(shape[axis])) for p in _FREE_PROBES):
                axes.append(axis)
        out[name] = axes
    return out


def symbolic_axes(graph: Graph, size_agnostic: Callable[[Node], bool]) -> tuple[dict[str, list[int]],
                                                                                dict[str, set[int]]]:
    """(input -> axes a target makes symbolic, each value whose shape then varies -> its varying axes),
    for a target whose ``size_agnostic(node)`` says it emits ``node`` without baking in shapes that vary. The free axes
    of :func:`free_axes` when every node on a varying value is size-agnostic, else none: a net the
    target cannot follow keeps the sizes it was read at (the batch stays dynamic either way)."""
    axes = free_axes(graph)
    pairs = [(name, a) for name, ax in axes.items() for a in ax]
    if not pairs:
        return {}, {}
    varying = varying_values(graph, pairs)
    if varying is None:
        return {}, {}
    for node in graph.nodes:
        if any(v in varying for v in (*node.inputs, *node.outputs)) and not size_agnostic(node):
            return {}, {}
    return {k: v for k, v in axes.items() if v}, varying
