"""SSD's Normalize, PriorBox and DetectionOutput as registered Keras layers written with ``keras.ops``
(formulas: :mod:`caffe2x.layers.detection`). 4-D blobs are NHWC; DetectionOutput's ``(1, 1, rows, 7)``
is returned as ``(1, rows, 7, 1)``, which the NCHW<->NHWC convention maps back.

DetectionOutput is computed densely for every image and class at once: the ``top_k`` best scores above
the threshold (``top_k`` keeps the lower index on ties, as Caffe's stable sort), their pairwise Caffe
IoU, then one pass over the candidates in score order (``ops.fori_loop``) carrying the kept set and
each class's threshold (times ``eta`` after each keep while above 0.5) -- Caffe's greedy NMS.
``keep_top_k`` then keeps the best over all classes, and rows come out by image, label and NMS order.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from caffe2x.graph.formulas import prior_follows_input
from caffe2x.graph.ir import Node
from caffe2x.targets.keras.dynamic_layers import prior_box_tensor, static
from caffe2x.targets.keras.layers import CUSTOM_OBJECTS
from caffe2x.targets.keras.ops import BuildContext, builder, set_weights

_PACKAGE = "caffe2x"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeNormalize(keras.layers.Layer):
    """SSD's Normalize on NHWC (or (N, C)) input: ``x / sqrt(sum x^2 + eps) * scale``."""

    def __init__(self, across_spatial: bool = True, channel_shared: bool = True, eps: float = 1e-10,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.across_spatial = bool(across_spatial)
        self.channel_shared = bool(channel_shared)
        self.eps = float(eps)

    def build(self, input_shape: tuple[Any, ...]) -> None:
        channels = int(input_shape[-1])
        self.scale = self.add_weight(name="scale", shape=(1,) if self.channel_shared else (channels,),
                                     initializer="ones")

    def call(self, x: Any) -> Any:
        axes = tuple(range(1, len(x.shape))) if self.across_spatial else (-1,)
        norm = ops.sqrt(ops.sum(x * x, axis=axes, keepdims=True) + np.float32(self.eps))
        return x / norm * self.scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "across_spatial": self.across_spatial,
                "channel_shared": self.channel_shared, "eps": self.eps}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffePriorBox(keras.layers.Layer):
    """SSD's PriorBox: ``(1, 2, H*W*P*4)`` for the feature map's size (and, called with the image too
    and no img_size, the image's: :func:`caffe2x.graph.formulas.prior_attrs`), a constant when the
    sizes are known, computed from the run-time shapes otherwise (:mod:`.dynamic_layers`)."""

    def __init__(self, prior: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prior = dict(prior)

    def call(self, x: Any, *image: Any) -> Any:
        shape = ops.shape(x)
        size = tuple(ops.shape(image[0])[1:3]) if image and prior_follows_input(self.prior) else None
        return prior_box_tensor(self.prior, shape[1], shape[2], size)

    def compute_output_shape(self, input_shape: Any, *image: Any) -> tuple[int | None, ...]:
        from caffe2x.graph.formulas import num_priors

        h, w = input_shape[1], input_shape[2]
        return (1, 2, None if h is None or w is None else int(h) * int(w) * num_priors(self.prior) * 4)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "prior": self.prior}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeDetectionOutput(keras.layers.Layer):
    """SSD's DetectionOutput (see the module docstring); output ``(1, rows, 7, 1)``."""

    def __init__(self, detection: dict[str, Any], num_priors: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detection = dict(detection)
        self.num_priors = int(num_priors)

    def compute_output_spec(self, loc: Any, conf: Any, prior: Any) -> Any:
        return keras.KerasTensor((1, None, 7, 1), dtype="float32")

    def _decode(self, loc: Any, pbox: Any, pvar: Any) -> Any:
        a = self.detection
        var = ops.ones_like(pvar) if a["variance_encoded_in_target"] else pvar
        if a["code_type"] == "corner":
            return pbox + var * loc
        px0, py0, px1, py1 = (pbox[..., i] for i in range(4))
        v0, v1, v2, v3 = (var[..., i] for i in range(4))
        l0, l1, l2, l3 = (loc[..., i] for i in range(4))
        pw, ph = px1 - px0, py1 - py0
        if a["code_type"] == "center_size":
            pcx, pcy = (px0 + px1) / 2.0, (py0 + py1) / 2.0
            cx, cy = v0 * l0 * pw + pcx, v1 * l1 * ph + pcy
            bw, bh = ops.exp(v2 * l2) * pw, ops.exp(v3 * l3) * ph
            return ops.stack([cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0], axis=-1)
        return ops.stack([px0 + v0 * l0 * pw, py0 + v1 * l1 * ph, px1 + v2 * l2 * pw, py1 + v3 * l3 * ph], axis=-1)

    @staticmethod
    def _overlaps(boxes: Any) -> Any:
        """Caffe's JaccardOverlap between every pair of boxes along axis -2: (..., K, K)."""
        x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
        w, h = x1 - x0, y1 - y0
        size = ops.where((w < 0) | (h < 0), ops.zeros_like(w), w * h)
        iw = ops.minimum(x1[..., :, None], x1[..., None, :]) - ops.maximum(x0[..., :, None], x0[..., None, :])
        ih = ops.minimum(y1[..., :, None], y1[..., None, :]) - ops.maximum(y0[..., :, None], y0[..., None, :])
        inter = iw * ih
        union = size[..., :, None] + size[..., None, :] - inter
        safe = ops.where((iw > 0) & (ih > 0), union, ops.ones_like(union))
        return ops.where((iw > 0) & (ih > 0), inter / safe, ops.zeros_like(inter))

    def call(self, loc: Any, conf: Any, prior: Any) -> Any:
        a = self.detection
        c = a["num_classes"]
        # the prior count: a Python int where the sizes are known, else a tensor (symbolic input sizes)
        p = ops.shape(prior)[2]
        p = self.num_priors if p is None else p // 4
        share = a["share_location"]
        lc = 1 if share else c
        loc = ops.reshape(loc, (-1, p, lc, 4))
        scores = ops.transpose(ops.reshape(conf, (-1, p, c)), (0, 2, 1))              # (N, C, P)
        pri = ops.reshape(prior, (2, p, 4))
        boxes = self._decode(ops.transpose(loc, (0, 2, 1, 3)), pri[0], pri[1])          # (N, L, P, 4)
        boxes = ops.broadcast_to(boxes, (ops.shape(scores)[0], c, p, 4)) if share else boxes
        neg_inf = np.float32(-np.inf)
        valid_class = np.ones((1, c, 1), dtype=bool)
        if 0 <= a["background_label_id"] < c:
            valid_class[0, a["background_label_id"]] = False
        masked = ops.where(valid_class & (scores > np.float32(a["confidence_threshold"])), scores, neg_inf)
        k = p if a["top_k"] <= -1 else min(a["top_k"], p) if static(p) else ops.minimum(a["top_k"], p)
        top_scores, top_idx = ops.top_k(masked, k, sorted=True)                        # (N, C, K)
        valid = top_scores > neg_inf
        cand = ops.take_along_axis(boxes, ops.expand_dims(top_idx, -1), axis=2)        # (N, C, K, 4)
        iou = self._overlaps(cand)                                                      # (N, C, K, K)
        eta = np.float32(a["eta"])
        positions = ops.arange(k)

        def step(i: Any, state: tuple[Any, Any]) -> tuple[Any, Any]:
            kept, thr = state
            row = ops.take(iou, i, axis=2)                                              # (N, C, K)
            clash = ops.any(kept & (row > ops.expand_dims(thr, -1)), axis=-1)
            keep = ops.take(valid, i, axis=2) & ~clash
            kept = kept | (ops.expand_dims(keep, -1) & (positions == i))
            shrink = keep & (thr > 0.5) if eta < 1 else ops.zeros_like(keep)
            return kept, ops.where(shrink, thr * eta, thr)

        start = (ops.zeros_like(valid), ops.full_like(top_scores[..., 0], np.float32(a["nms_threshold"])))
        kept, _ = ops.fori_loop(0, k, step, start)
        final = kept
        if a["keep_top_k"] > -1:
            flat = ops.reshape(ops.where(kept, top_scores, neg_inf), (-1, c * k))
            best = min(a["keep_top_k"], c * k) if static(k) else ops.minimum(a["keep_top_k"], c * k)
            _, order = ops.top_k(flat, best, sorted=True)
            chosen = ops.sum(ops.one_hot(order, c * k, dtype="int32"), axis=1) > 0
            final = kept & ops.reshape(chosen, (-1, c, k))
        n_idx, c_idx, j_idx = ops.nonzero(final)
        flat_index = (n_idx * c + c_idx) * k + j_idx
        score = ops.take(ops.reshape(top_scores, (-1,)), flat_index)
        box = ops.take(ops.reshape(cand, (-1, 4)), flat_index, axis=0)
        rows = ops.concatenate([ops.cast(ops.stack([n_idx, c_idx], axis=1), "float32"),
                                ops.expand_dims(score, 1), box], axis=1)
        n = ops.shape(scores)[0]
        fake = ops.concatenate([ops.expand_dims(ops.cast(ops.arange(n), "float32"), 1),
                                ops.full((n, 6), -1.0, dtype="float32")], axis=1)
        found = ops.shape(rows)[0]
        count = found + n * ops.cast(ops.equal(found, 0), "int32")
        both = ops.concatenate([rows, fake], axis=0)
        taken = ops.slice(both, (0, 0), (count, 7))
        return ops.reshape(taken, (1, -1, 7, 1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "detection": self.detection, "num_priors": self.num_priors}


CUSTOM_OBJECTS.update({cls.__name__: cls for cls in (CaffeNormalize, CaffePriorBox, CaffeDetectionOutput)})


@builder("Normalize")
def _normalize(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    a = node.attrs
    layer = CaffeNormalize(a["across_spatial"], a["channel_shared"], a["eps"], name=ctx.name(node))
    y = layer(ins[0])
    set_weights(layer, scale=ctx.param(node, "weight"))
    return [y]


@builder("PriorBox")
def _prior_box(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    if prior_follows_input(node.attrs) and any(ctx.varies(v) for v in node.inputs):
        return [CaffePriorBox(node.attrs, name=ctx.name(node))(ins[0], ins[1])]
    return [CaffePriorBox(node.attrs, name=ctx.name(node))(ins[0])]


@builder("DetectionOutput")
def _detection_output(ctx: BuildContext, node: Node, ins: list[Any]) -> list[Any]:
    priors = ctx.shape(node.inputs[2])[2] // 4
    ins = [ctx.to_caffe_order(node, t, ctx.rank(v)) for t, v in zip(ins, node.inputs)]
    return [CaffeDetectionOutput(node.attrs, priors, name=ctx.name(node))(*ins)]
