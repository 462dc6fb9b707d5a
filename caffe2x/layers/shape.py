"""Layers that move or cut data without arithmetic: Reshape, Permute (SSD fork), Tile, Crop (FCN/HED),
Slice (any number of tops).

Every shape is resolved by the reader, so targets see plain numbers:

=========  ===============================================  ============================================
op         attrs                                            y
=========  ===============================================  ============================================
Reshape    shape (the whole output shape, Caffe's 0 and -1  ``x`` in memory order (C order) with
           resolved)                                        ``shape``
Permute    order (complete: Caffe appends the axes the      ``x.transpose(order)``
           prototxt leaves out, in increasing order)
Tile       axis, tiles                                      the block ``x[..., axis:]`` repeated
                                                            ``tiles`` times along ``axis`` (np.tile)
Crop       offsets (one per axis, 0 before crop axis);      ``x[o0:o0+s0, o1:o1+s1, …]``, ``s`` the
           inputs x, reference                              reference's shape from the crop axis on
Slice      axis, points (0, p1, …, size)                    top i = ``x[..., points[i]:points[i+1], …]``
=========  ===============================================  ============================================
"""
from __future__ import annotations

from typing import Any

import numpy as np

from caffe2x.layers.base import (BlobSource, Caffe2xError, Graph, LayerSpec, Node, Shape, inputs, layer_handler,
                                 normalize_axis, one_input, reference_op, shape_function)


# --------------------------------------------------------------------------- Reshape
def reshape_output(layer: Any, x: Shape) -> tuple[int, ...]:
    """Caffe's ReshapeLayer::Reshape: dims ``axis .. axis+num_axes`` replaced by ``shape`` (0 copies the
    input dim at that position, one -1 is inferred); a negative axis counts from past the end."""
    p = layer.reshape_param
    dims = [int(d) for d in p.shape.dim]
    start = p.axis if p.axis >= 0 else len(x) + p.axis + 1
    if not 0 <= start <= len(x):
        raise Caffe2xError(f"layer {layer.name!r} (Reshape): axis {p.axis} is out of range for a {len(x)}-D input")
    if p.num_axes < -1:
        raise Caffe2xError(f"layer {layer.name!r} (Reshape): num_axes must be >= -1, got {p.num_axes}")
    end = len(x) if p.num_axes == -1 else start + p.num_axes
    if end > len(x):
        raise Caffe2xError(f"layer {layer.name!r} (Reshape): axis + num_axes = {end} is past the input's {len(x)} axes")
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise Caffe2xError(f"layer {layer.name!r} (Reshape): shape {dims} may hold one -1 and no other negative dim")
    out = list(x[:start]) + dims + list(x[end:])
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(x):
                raise Caffe2xError(f"layer {layer.name!r} (Reshape): shape dim {i} is 0 but the input has no axis "
                                   f"{start + i} to copy")
            out[start + i] = x[start + i]
    count = int(np.prod(x))
    if -1 in dims:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or count % known:
            raise Caffe2xError(f"layer {layer.name!r} (Reshape): {count} values cannot be shaped {dims}")
        out[start + dims.index(-1)] = count // known
    if int(np.prod(out)) != count:
        raise Caffe2xError(f"layer {layer.name!r} (Reshape): input {list(x)} ({count} values) cannot become {out}")
    return tuple(out)


def caffe_rule(layer: Any, rank: int) -> dict[str, Any]:
    """The prototxt's rule (``axis`` and ``num_axes`` resolved against the input's rank, ``dims`` as
    written): what Caffe applies to whatever shape reaches the layer at run time."""
    p = layer.reshape_param
    start = p.axis if p.axis >= 0 else rank + p.axis + 1
    end = rank if p.num_axes == -1 else start + p.num_axes
    return {"axis": int(start), "num_axes": int(end - start), "dims": [int(d) for d in p.shape.dim]}


def apply_rule(x: Shape, rule: dict[str, Any]) -> tuple[int, ...] | None:
    """Caffe's reshape of an input shaped ``x`` by ``rule`` (see :func:`caffe_rule`); None if it cannot."""
    start, end, dims = rule["axis"], rule["axis"] + rule["num_axes"], list(rule["dims"])
    if end > len(x):
        return None
    out = list(x[:start]) + dims + list(x[end:])
    for i, d in enumerate(dims):
        if d == 0:
            out[start + i] = x[start + i]
    count = int(np.prod(x))
    if -1 in dims:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or count % known:
            return None
        out[start + dims.index(-1)] = count // known
    return tuple(int(d) for d in out) if int(np.prod(out)) == count else None


@layer_handler("Reshape")
def _reshape(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    return LayerSpec("Reshape", {"shape": list(reshape_output(layer, x)), "caffe_rule": caffe_rule(layer, len(x))})


@shape_function("Reshape")
def _reshape_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    shape = tuple(node.attrs["shape"])
    rule = node.attrs.get("caffe_rule")
    if rule and int(np.prod(shape)) != int(np.prod(ins[0])):  # reshaped net: Caffe applies the prototxt's rule
        ruled = apply_rule(ins[0], rule)
        if ruled is None:
            raise Caffe2xError(f"layer {node.name!r} (Reshape): an input shaped {list(ins[0])} cannot be shaped "
                               f"{rule['dims']} (it takes {int(np.prod(shape[1:]))} values per sample)")
        return [ruled]
    if int(np.prod(shape)) != int(np.prod(ins[0])):
        raise Caffe2xError(f"layer {node.name!r} (Reshape): {list(ins[0])} cannot become {list(shape)}")
    return [shape]


@reference_op("Reshape")
def _reshape_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    """At the graph's batch size the shape is ``shape``; at another batch size a reshape that keeps the
    batch axis follows it (as a reshaped Caffe net would). When the batch is no longer the first axis
    (after the OCR fork's Transpose) the prototxt's rule is applied to the input's shape, as Caffe does."""
    x, shape = ins[0], tuple(node.attrs["shape"])
    if shape and graph.shapes[node.inputs[0]][0] == shape[0]:
        shape = (x.shape[0], *shape[1:])
    if int(np.prod(shape)) != x.size:
        rule = node.attrs.get("caffe_rule")
        ruled = apply_rule(x.shape, rule) if rule else None
        if ruled is None:
            raise Caffe2xError(f"layer {node.name!r} (Reshape): an input shaped {list(x.shape)} cannot become "
                               f"{list(shape)}")
        shape = ruled
    return [x.reshape(shape)]


# --------------------------------------------------------------------------- Permute
@layer_handler("Permute")
def _permute(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """SSD's PermuteLayer: ``order`` names axes, each at most once; the rest follow in increasing order."""
    x = one_input(layer, ins)
    order: list[int] = []
    for a in layer.permute_param.order:
        if a >= len(x) or a in order:
            raise Caffe2xError(f"layer {layer.name!r} (Permute): order {list(layer.permute_param.order)} names axis "
                               f"{a} twice or past the input's {len(x)} axes")
        order.append(int(a))
    order += [a for a in range(len(x)) if a not in order]
    return LayerSpec("Permute", {"order": order})


@shape_function("Permute")
def _permute_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    return [tuple(ins[0][a] for a in node.attrs["order"])]


@reference_op("Permute")
def _permute_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    return [np.ascontiguousarray(ins[0].transpose(node.attrs["order"]))]


# --------------------------------------------------------------------------- Tile
@layer_handler("Tile")
def _tile(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    p = layer.tile_param
    if not p.HasField("tiles") or p.tiles < 1:
        raise Caffe2xError(f"layer {layer.name!r} (Tile) needs tile_param.tiles >= 1")
    return LayerSpec("Tile", {"axis": normalize_axis(p.axis, len(x), layer.name), "tiles": int(p.tiles)})


@shape_function("Tile")
def _tile_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, axis = list(ins[0]), node.attrs["axis"]
    x[axis] *= node.attrs["tiles"]
    return [tuple(x)]


@reference_op("Tile")
def _tile_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    reps = [1] * x.ndim
    reps[node.attrs["axis"]] = node.attrs["tiles"]
    return [np.tile(x, reps)]


# --------------------------------------------------------------------------- Crop
@layer_handler("Crop")
def _crop(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x, ref = inputs(layer, ins, 2)
    p = layer.crop_param
    axis = normalize_axis(p.axis, len(x), layer.name)
    given = [int(o) for o in p.offset]
    if len(given) > 1 and axis + len(given) != len(x):
        raise Caffe2xError(f"layer {layer.name!r} (Crop): {len(given)} offsets for the {len(x) - axis} axes from "
                           f"axis {axis}")
    if len(ref) != len(x):
        raise Caffe2xError(f"layer {layer.name!r} (Crop): inputs {list(x)} and {list(ref)} differ in rank")
    offsets = [0] * len(x)
    for i in range(axis, len(x)):
        offsets[i] = given[0] if len(given) == 1 else (given[i - axis] if given else 0)
        if x[i] - offsets[i] < ref[i]:
            raise Caffe2xError(f"layer {layer.name!r} (Crop): crop of axis {i} (size {ref[i]}, offset {offsets[i]}) "
                               f"runs past the input's {x[i]}")
    return LayerSpec("Crop", {"axis": axis, "offsets": offsets})


@shape_function("Crop")
def _crop_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, ref = ins
    axis, offsets = node.attrs["axis"], node.attrs["offsets"]
    if len(ref) != len(x):
        raise Caffe2xError(f"layer {node.name!r} (Crop): inputs {list(x)} and {list(ref)} differ in rank")
    for i in range(axis, len(x)):
        if x[i] - offsets[i] < ref[i]:
            raise Caffe2xError(f"layer {node.name!r} (Crop): crop of axis {i} (size {ref[i]}, offset {offsets[i]}) "
                               f"runs past the input's {x[i]}")
    return [tuple(x[:axis]) + tuple(ref[axis:])]


@reference_op("Crop")
def _crop_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    x, ref = ins
    axis, offsets = node.attrs["axis"], node.attrs["offsets"]
    index = tuple(slice(None) if i < axis else slice(offsets[i], offsets[i] + ref.shape[i]) for i in range(x.ndim))
    return [np.ascontiguousarray(x[index])]


# --------------------------------------------------------------------------- Slice
@layer_handler("Slice")
def _slice(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    x = one_input(layer, ins)
    p = layer.slice_param
    if p.HasField("axis") and p.HasField("slice_dim"):
        raise Caffe2xError(f"layer {layer.name!r} (Slice): give axis or slice_dim, not both")
    axis = int(p.slice_dim) if p.HasField("slice_dim") else normalize_axis(p.axis, len(x), layer.name)
    if axis >= len(x):
        raise Caffe2xError(f"layer {layer.name!r} (Slice): slice_dim {axis} is out of range for {list(x)}")
    tops, size = len(layer.top), x[axis]
    if len(p.slice_point):
        points = [int(v) for v in p.slice_point]
        if len(points) != tops - 1:
            raise Caffe2xError(f"layer {layer.name!r} (Slice): {len(points)} slice_point(s) for {tops} tops")
        bounds = [0, *points, size]
        if any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise Caffe2xError(f"layer {layer.name!r} (Slice): slice points {points} must increase within 1..{size - 1}")
    else:
        if tops == 0 or size % tops:
            raise Caffe2xError(f"layer {layer.name!r} (Slice): {tops} tops do not divide axis {axis} of size {size}")
        bounds = [i * size // tops for i in range(tops + 1)]
    return LayerSpec("Slice", {"axis": axis, "points": bounds})


@shape_function("Slice")
def _slice_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    x, axis, points = ins[0], node.attrs["axis"], node.attrs["points"]
    if points[-1] != x[axis]:
        raise Caffe2xError(f"layer {node.name!r} (Slice): slice ends at {points[-1]}, axis {axis} has {x[axis]}")
    return [tuple(x[:axis]) + (b - a,) + tuple(x[axis + 1:]) for a, b in zip(points, points[1:])]


@reference_op("Slice")
def _slice_ref(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    axis, points = node.attrs["axis"], node.attrs["points"]
    lead = (slice(None),) * axis
    return [np.ascontiguousarray(x[lead + (slice(a, b),)]) for a, b in zip(points, points[1:])]
