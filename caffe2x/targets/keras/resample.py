"""MAX Pooling with a mask top, Upsample (unpooling / nearest) and Interp as registered Keras layers
written with ``keras.ops`` on NHWC tensors (formulas: :mod:`caffe2x.layers.resample`).

* CaffeMaxPoolWithMask scans the window offsets in row-major order keeping a value only when strictly
  greater (Caffe's first maximum on ties; ``argmax`` does not promise which tie it returns).
* CaffeUnpooling sorts each channel's (index, position) keys so only the last write to an index is
  scattered (Caffe's loop order); the others go to a spare slot that is cut off.
* CaffeInterp gathers rows and columns at Caffe's float32 source positions (constants from the sizes,
  or computed from the run-time sizes by Caffe's rule, :mod:`.dynamic_layers`).
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.graph.formulas import pool_window
from caffe2x.graph.ir import Node
from caffe2x.targets.keras.dynamic_layers import interp_size, interp_weights
from caffe2x.targets.keras.layers import CUSTOM_OBJECTS
from caffe2x.targets.keras.ops import BuildContext, builder

_PACKAGE = "caffe2x"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeMaxPoolWithMask(keras.layers.Layer):
    """Caffe's MAX pooling on NHWC input returning ``[values, mask]`` (mask: ``h * W + w`` as float)."""

    def __init__(self, kernel: Any, stride: Any, pad: Any, ceil: bool = True, global_pooling: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel, self.stride, self.pad = list(kernel), list(stride), list(pad)
        self.ceil = bool(ceil)
        self.global_pooling = bool(global_pooling)

    def call(self, x: Any) -> list[Any]:
        h, w = int(x.shape[1]), int(x.shape[2])
        kh, kw, sh, sw, ph, pw, oh, ow, rh, rw = pool_window(h, w, self.kernel, self.stride, self.pad, self.ceil,
                                                             self.global_pooling)
        xp = ops.pad(x, [[0, 0], [ph, rh], [pw, rw], [0, 0]], constant_values=float("-inf"))
        best, arg = None, None
        for i in range(kh):
            for j in range(kw):
                cand = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                if best is None:
                    best, arg = cand, ops.zeros_like(cand)
                    continue
                better = cand > best
                best = ops.where(better, cand, best)
                arg = ops.where(better, np.float32(i * kw + j), arg)
        ki = ops.floor(arg / np.float32(kw))
        kj = arg - ki * np.float32(kw)
        rows = (np.arange(oh, dtype=np.float32) * sh - ph).reshape(1, oh, 1, 1)
        cols = (np.arange(ow, dtype=np.float32) * sw - pw).reshape(1, 1, ow, 1)
        mask = (rows + ki) * np.float32(w) + (cols + kj)
        return [best, mask]

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        n, h, w, c = input_shape
        *_, oh, ow, _, _ = pool_window(int(h), int(w), self.kernel, self.stride, self.pad, self.ceil,
                                       self.global_pooling)
        return [(n, oh, ow, c), (n, oh, ow, c)]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel": self.kernel, "stride": self.stride, "pad": self.pad,
                "ceil": self.ceil, "global_pooling": self.global_pooling}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeUnpooling(keras.layers.Layer):
    """SegNet's Upsample on NHWC ``[x, mask]``: each value to its mask index, the last write winning."""

    def __init__(self, size: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = [int(s) for s in size]

    def call(self, x: Any, mask: Any) -> Any:
        h, w, c = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        oh, ow = self.size
        plane, count = oh * ow, h * w
        vals = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, count))                 # rows: (n, c)
        # the keys (index, position) need plane x count values: beyond int32 (ENet's 512 x 1024 input
        # unpools 128 x 256 into 256 x 512: 4.3e9) they are int64, or they wrap and scatter out of range
        kind = "int32" if plane * count < 2 ** 31 else "int64"
        idx = ops.cast(ops.reshape(ops.transpose(mask, (0, 3, 1, 2)), (-1, count)), kind)
        key = idx * count + ops.arange(count, dtype=kind)
        top, _ = ops.top_k(key, count, sorted=True)                                        # last write first
        target = top // count
        source = top - target * count
        previous = ops.concatenate([ops.full_like(target[:, :1], -1), target[:, :-1]], axis=1)
        slot = ops.where(ops.equal(target, previous), plane, target)
        moved = ops.take_along_axis(vals, source, axis=1)
        rows = ops.shape(vals)[0]
        row_ids = ops.broadcast_to(ops.expand_dims(ops.arange(rows, dtype=kind), 1), ops.shape(slot))
        indices = ops.stack([ops.reshape(row_ids, (-1,)), ops.reshape(slot, (-1,))], axis=1)
        out = ops.scatter(indices, ops.reshape(moved, (-1,)), (rows, plane + 1))[:, :plane]
        return ops.transpose(ops.reshape(out, (-1, c, oh, ow)), (0, 2, 3, 1))

    def compute_output_shape(self, x_shape: tuple[Any, ...], *mask_shape: Any) -> tuple[Any, ...]:
        return (x_shape[0], self.size[0], self.size[1], x_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeUpsampleNearest(keras.layers.Layer):
    """The YOLO ports' Upsample on NHWC input: each value repeated ``scale`` times along H and W."""

    def __init__(self, scale: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = [int(s) for s in scale]

    def call(self, x: Any) -> Any:
        return ops.repeat(ops.repeat(x, self.scale[0], axis=1), self.scale[1], axis=2)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        n, h, w, c = input_shape
        return (n, None if h is None else h * self.scale[0], None if w is None else w * self.scale[1], c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeInterp(keras.layers.Layer):
    """PSPNet's Interp on NHWC input: crop, then align-corners bilinear with Caffe's float32 weights.

    With ``rule`` (Caffe's zoom / shrink / pad / height-width rule, :func:`caffe2x.layers.resample.
    interp_geometry`) the crop and size follow the run-time input (:mod:`.dynamic_layers`); without it
    (files written before) the sizes are the ones it was built at."""

    def __init__(self, size: Any, crop: Any, region: Any, rule: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.crop, self.region = [int(s) for s in size], [int(s) for s in crop], [int(s) for s in region]
        self.rule = dict(rule) if rule else None

    def call(self, x: Any, *like: Any) -> Any:
        if self.rule is None:
            (t, l), (rh, rw) = self.crop, self.region
            src = x[:, t:t + rh, l:l + rw, :]
            size = self.size
        else:
            beg, end = self.rule["pad_beg"], self.rule["pad_end"]
            src = x[:, -beg:(end if end < 0 else None), -beg:(end if end < 0 else None), :] if beg or end else x
            shape = ops.shape(src)
            rh, rw = shape[1], shape[2]
            size = interp_size(self.rule, (rh, rw), tuple(ops.shape(like[0])[1:3]) if like else None)
        h0, h1, a0, a1 = interp_weights(rh, size[0])
        w0, w1, b0, b1 = interp_weights(rw, size[1])
        r0, r1 = ops.take(src, h0, axis=1), ops.take(src, h1, axis=1)
        b0, b1 = ops.reshape(b0, (1, 1, -1, 1)), ops.reshape(b1, (1, 1, -1, 1))
        top = b0 * ops.take(r0, w0, axis=2) + b1 * ops.take(r0, w1, axis=2)
        bottom = b0 * ops.take(r1, w0, axis=2) + b1 * ops.take(r1, w1, axis=2)
        return ops.reshape(a0, (1, -1, 1, 1)) * top + ops.reshape(a1, (1, -1, 1, 1)) * bottom

    def compute_output_shape(self, input_shape: tuple[Any, ...], *like: Any) -> tuple[Any, ...]:
        if self.rule is None:
            return (input_shape[0], self.size[0], self.size[1], input_shape[3])
        rule = self.rule
        if rule["height"] is not None and rule["width"] is not None and rule["shrink"] is None and rule["zoom"] is None:
            return (input_shape[0], rule["height"], rule["width"], input_shape[3])
        eff = tuple(None if d is None else d + rule["pad_beg"] + rule["pad_end"] for d in input_shape[1:3])
        if rule["shrink"] is None and rule["zoom"] is None or None in eff:
            # the size of the second input (Keras passes only the first input's shape here), or unknown
            return (input_shape[0], None, None, input_shape[3])
        h, w = interp_size(rule, eff, None)
        return (input_shape[0], int(h), int(w), input_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "crop": self.crop, "region": self.region, "rule": self.rule}


CUSTOM_OBJECTS.update({cls.__name__: cls for cls in (CaffeMaxPoolWithMask, CaffeUnpooling, CaffeUpsampleNearest,
                                                     CaffeInterp)})


@builder("PoolingWithMask")
def _pool_mask(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    layer = CaffeMaxPoolWithMask(a["kernel"], a["stride"], a["pad"], a["ceil"], a["global_pooling"],
                                 name=ctx.name(node))
    return list(layer(ins[0]))


@builder("Unpooling")
def _unpool(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return [CaffeUnpooling(node.attrs["size"], name=ctx.name(node))(ins[0], ins[1])]


@builder("UpsampleNearest")
def _nearest(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    return [CaffeUpsampleNearest(node.attrs["scale"], name=ctx.name(node))(ins[0])]


@builder("Interp")
def _interp(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    if "rule" in a and any(ctx.varies(v) for v in node.inputs):  # the sizes follow the run-time input
        return [CaffeInterp(a["size"], a["crop"], a["region"], a["rule"], name=ctx.name(node))(*ins)]
    return [CaffeInterp(a["size"], a["crop"], a["region"], name=ctx.name(node))(ins[0])]
