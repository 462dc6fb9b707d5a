"""Keras builders for the shape family (:mod:`caffe2x.layers.shape`): Reshape, Permute, Tile, Crop, Slice.

Caffe's axes are NCHW; a 4-D Keras tensor is NHWC. Reshape works in Caffe's memory order (the input
permuted to NCHW first, the output back to NHWC when 4-D); Permute composes the two layout changes
and Caffe's order into one ``keras.layers.Permute``; Tile, Crop and Slice map their axes
(:func:`keras_axis`). A Reshape that changes the batch axis is refused; a Permute that moves it (the
OCR fork's Transpose) is a registered transpose layer.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.errors import Caffe2xError
from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.keras.ops import BuildContext, builder, keras_axis

_NHWC = (0, 2, 3, 1)  # Keras axis i of a 4-D tensor holds Caffe axis _NHWC[i]


def layout(rank: int) -> tuple[int, ...]:
    """Caffe axis held by each Keras axis of a rank-``rank`` tensor."""
    return _NHWC if rank == 4 else tuple(range(rank))


def batch_moved(graph: Graph, value: str) -> bool:
    """Whether ``value`` descends from a Permute that moved the first axis (the OCR fork's Transpose):
    the batch is then elsewhere, and a Reshape must follow Caffe's rule at run time."""
    moved: set[str] = set()
    for node in graph.nodes:
        if (node.op == "Permute" and int(node.attrs["order"][0]) != 0) or any(v in moved for v in node.inputs):
            moved.update(node.outputs)
        if value in node.outputs:
            break
    return value in moved


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeRuleReshape(keras.layers.Layer):
    """Caffe's Reshape rule applied to the run-time shape of a Caffe-ordered tensor: axes ``axis ..
    axis + num_axes`` replaced by ``dims`` (0 copies the input's dim there, -1 is inferred). For a batch
    that is no longer the first axis (after the OCR fork's Transpose), so the model follows any batch."""

    def __init__(self, axis: int, num_axes: int, dims: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.num_axes, self.dims = int(axis), int(num_axes), [int(d) for d in dims]

    def _shape(self, shape: Any) -> list[Any]:
        head, tail = list(shape[:self.axis]), list(shape[self.axis + self.num_axes:])
        return head + [shape[self.axis + i] if d == 0 else d for i, d in enumerate(self.dims)] + tail

    def call(self, x: Any) -> Any:
        return ops.reshape(x, self._shape(ops.shape(x)))

    def compute_output_shape(self, input_shape: Any) -> Any:
        out = self._shape(tuple(input_shape))
        if -1 in out:
            known = [d for d in out if d != -1]
            total = None if None in input_shape else int(np.prod(input_shape))
            rest = None if None in known or total is None else total // int(np.prod(known))
            out = [rest if d == -1 else d for d in out]
        return tuple(out)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "num_axes": self.num_axes, "dims": self.dims}


@builder("Reshape")
def _reshape(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    x_shape, y_shape = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    rule = node.attrs.get("caffe_rule")
    if rule and (batch_moved(ctx.graph, node.inputs[0]) or ctx.varies(node.inputs[0])):
        x = ctx.to_caffe_order(node, ins[0], len(x_shape))
        y = CaffeRuleReshape(rule["axis"], rule["num_axes"], rule["dims"], name=ctx.name(node))(x)
        return [ctx.from_caffe_order(node, y, len(y_shape))]
    if x_shape[0] != y_shape[0]:
        raise Caffe2xError(f"layer {node.name!r} (Reshape) changes the batch axis ({x_shape[0]} -> {y_shape[0]}), "
                           f"which a Keras model cannot")
    x = ctx.to_caffe_order(node, ins[0], len(x_shape))
    y = keras.layers.Reshape(tuple(y_shape[1:]), name=ctx.name(node))(x)
    return [ctx.from_caffe_order(node, y, len(y_shape))]


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeTransposeAll(keras.layers.Layer):
    """A transpose that moves the first axis too (``keras.layers.Permute`` keeps it): the OCR fork's
    Transpose turning features (N, C, 1, W) into a sequence (W, 1, N, C). From then on the tensor's
    first axis is the sequence, as for the recurrent layers: call the model on the whole batch
    (``predict`` would split the first axis of the *inputs*, which no longer lines up)."""

    def __init__(self, perm: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.perm = [int(p) for p in perm]

    def call(self, x: Any) -> Any:
        return ops.transpose(x, self.perm)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[p] for p in self.perm)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "perm": self.perm}


@builder("Permute")
def _permute(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    order = [int(a) for a in node.attrs["order"]]
    rank = len(order)
    pos_in = {c: k for k, c in enumerate(layout(rank))}
    perm = [pos_in[order[c]] for c in layout(rank)]  # Keras axis i of the output <- Keras input axis perm[i]
    if order[0] != 0:
        return [CaffeTransposeAll(perm, name=ctx.name(node))(ins[0])]
    return [keras.layers.Permute(tuple(perm[1:]), name=ctx.name(node))(ins[0])]


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeTile(keras.layers.Layer):
    """Caffe's Tile on the (Keras) axis ``axis``: the block from that axis on, ``tiles`` times."""

    def __init__(self, axis: int, tiles: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.tiles = int(axis), int(tiles)

    def call(self, x: Any) -> Any:
        reps = [1] * len(x.shape)
        reps[self.axis] = self.tiles
        return ops.tile(x, reps)

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = list(input_shape)
        shape[self.axis] = None if shape[self.axis] is None else shape[self.axis] * self.tiles
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "tiles": self.tiles}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeCrop(keras.layers.Layer):
    """Caffe's Crop in Keras axes: ``begin[i]:begin[i] + size[i]`` on every axis (size -1: the whole axis)."""

    def __init__(self, begin: Any, size: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.begin, self.size = [int(b) for b in begin], [int(s) for s in size]

    def call(self, x: Any) -> Any:
        return x[tuple(slice(None) if s < 0 else slice(b, b + s) for b, s in zip(self.begin, self.size))]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(d if s < 0 else s for d, s in zip(input_shape, self.size))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "begin": self.begin, "size": self.size}


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeSlice(keras.layers.Layer):
    """Caffe's Slice on the (Keras) axis ``axis``: one output per interval of ``points``."""

    def __init__(self, axis: int, points: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.points = int(axis), [int(p) for p in points]

    def call(self, x: Any) -> Any:
        lead = (slice(None),) * self.axis
        return [x[lead + (slice(a, b),)] for a, b in zip(self.points, self.points[1:])]

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = []
        for a, b in zip(self.points, self.points[1:]):
            shape = list(input_shape)
            shape[self.axis] = b - a
            shapes.append(tuple(shape))
        return shapes

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "points": self.points}


@builder("Tile")
def _tile(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    axis = keras_axis(node.attrs["axis"], ctx.rank(node.inputs[0]))
    return [CaffeTile(axis, node.attrs["tiles"], name=ctx.name(node))(ins[0])]


@builder("Crop")
def _crop(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    out = ctx.shape(node.outputs[0])
    axis, offsets = node.attrs["axis"], node.attrs["offsets"]
    if ctx.varies(node.inputs[1]):
        order = layout(len(out))
        return [CaffeCropLike([offsets[c] for c in order], [k for k, c in enumerate(order) if c >= axis],
                              name=ctx.name(node))(ins)]
    begin, size = [], []
    for c in layout(len(out)):
        begin.append(offsets[c])
        size.append(out[c] if c >= axis else -1)
    return [CaffeCrop(begin, size, name=ctx.name(node))(ins[0])]


@keras.saving.register_keras_serializable(package="caffe2x")
class CaffeCropLike(keras.layers.Layer):
    """Caffe's Crop when the reference's size is known only at run time: on each (Keras) axis in
    ``axes``, ``x[begin : begin + ref.shape]``; the other axes whole."""

    def __init__(self, begin: Any, axes: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.begin, self.axes = [int(b) for b in begin], [int(a) for a in axes]

    def call(self, inputs: Any) -> Any:
        x, ref = inputs
        size = ops.shape(ref)
        return x[tuple(slice(b, b + size[i]) if i in self.axes else slice(None) for i, b in enumerate(self.begin))]

    def compute_output_shape(self, input_shape: Any) -> Any:
        x, ref = input_shape
        return tuple(ref[i] if i in self.axes else d for i, d in enumerate(x))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "begin": self.begin, "axes": self.axes}


@builder("Slice")
def _slice(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    axis = keras_axis(node.attrs["axis"], ctx.rank(node.inputs[0]))
    outs = CaffeSlice(axis, node.attrs["points"], name=ctx.name(node))(ins[0])
    return list(outs)
