"""Interp's and PriorBox's geometry in ``keras.ops`` for sizes known only at run time (symbolic input
sizes, :mod:`.dynamic`): the layers of :mod:`.resample` and :mod:`.detection` call these when a size
is a tensor (TensorFlow tracing ``(None, None, None, C)``: ``model.export()``, TFLite), and Caffe's
numpy formulas (:mod:`caffe2x.graph.formulas`) when every size is a Python int (eager calls, JAX and
torch backends), so a size the model was built at computes what it always did.

The in-graph forms repeat the formulas' float32 operations one for one: Interp's source positions
``float(src - 1) / float(dst - 1) * i`` truncated (bit-identical weights), PriorBox's centres
``(i + offset) * step`` with the step ``float(img) / feature`` and corners over the image size
(float32 here, float64 then rounded in the reference: within an ulp).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from caffe2x.graph.formulas import interp_axis, prior_attrs, prior_box_sizes, prior_boxes, prior_offsets

f32 = np.float32


def static(*sizes: Any) -> bool:
    """Whether every size is a Python int (known when the layer runs)."""
    return all(isinstance(s, (int, np.integer)) for s in sizes)


def interp_weights(src: Any, dst: Any) -> tuple[Any, Any, Any, Any]:
    """:func:`caffe2x.graph.formulas.interp_axis` for int or tensor sizes ``src -> dst``."""
    if static(src, dst):
        return interp_axis(int(src), int(dst))
    src_less = src - 1
    ratio = ops.cast(src_less, "float32") / ops.cast(ops.maximum(dst - 1, 1), "float32")
    pos = ratio * ops.cast(ops.arange(dst), "float32")
    i0 = ops.cast(pos, "int32")
    i1 = i0 + ops.cast(ops.less(i0, src_less), "int32")
    lam1 = pos - ops.cast(i0, "float32")
    return i0, i1, 1.0 - lam1, lam1


def interp_size(rule: dict[str, Any], eff: tuple[Any, Any], like: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """Interp's output (H, W) by Caffe's rule on the cropped size ``eff`` (ints or tensors; ``like``:
    the second input's H, W)."""
    shrink, zoom = rule["shrink"], rule["zoom"]

    def shrunk(e: Any) -> Any:
        return (e - 1) // shrink + 1

    def zoomed(e: Any) -> Any:
        return e + (e - 1) * (zoom - 1)

    if shrink is not None and zoom is None:
        return shrunk(eff[0]), shrunk(eff[1])
    if zoom is not None and shrink is None:
        return zoomed(eff[0]), zoomed(eff[1])
    if rule["height"] is not None and rule["width"] is not None:
        return rule["height"], rule["width"]
    if shrink is not None and zoom is not None:
        return zoomed(shrunk(eff[0])), zoomed(shrunk(eff[1]))
    assert like is not None  # the reader refuses an Interp with no rule and no second input
    return like


def prior_box_tensor(attrs: dict[str, Any], h: Any, w: Any, image: tuple[Any, Any] | None) -> Any:
    """PriorBox's ``(1, 2, H*W*P*4)`` for a feature map of ``h x w`` and an image of ``image`` (H, W),
    ints or tensors (see :func:`caffe2x.graph.formulas.prior_attrs`)."""
    if static(h, w, *(image or ())):
        shape = None if image is None else (1, 1, int(image[0]), int(image[1]))
        return ops.convert_to_tensor(prior_boxes(prior_attrs(attrs, (1, 1, int(h), int(w)), shape), int(h), int(w)))
    img_h, img_w = (ops.cast(image[0], "float32"), ops.cast(image[1], "float32")) if image else (
        f32(attrs["img"][0]), f32(attrs["img"][1]))
    if image and attrs["rule"]["step"] == "derived":
        step_h, step_w = img_h / ops.cast(h, "float32"), img_w / ops.cast(w, "float32")
    else:
        step_h, step_w = f32(attrs["step"][0]), f32(attrs["step"][1])
    offs = np.array(prior_offsets(attrs), dtype=f32)     # (J, 2)
    sizes = np.array(prior_box_sizes(attrs), dtype=f32)  # (P, 2)
    cy = (ops.cast(ops.arange(h), "float32")[:, None] + offs[None, :, 0]) * step_h  # (H, J)
    cx = (ops.cast(ops.arange(w), "float32")[:, None] + offs[None, :, 1]) * step_w  # (W, J)
    cy, cx = cy[:, None, None, :], cx[None, :, None, :]
    half_w, half_h = (sizes[:, 0] / f32(2)).reshape(1, 1, -1, 1), (sizes[:, 1] / f32(2)).reshape(1, 1, -1, 1)
    # adding a zero of the other axis' shape broadcasts to (H, W, P, J) without changing a value
    zero_y, zero_x = cy * 0.0, cx * 0.0
    corners = [(cx - half_w) / img_w + zero_y, (cy - half_h) / img_h + zero_x,
               (cx + half_w) / img_w + zero_y, (cy + half_h) / img_h + zero_x]
    boxes = ops.reshape(ops.stack(corners, axis=-1), (-1, 4))
    if attrs["clip"]:
        boxes = ops.clip(boxes, 0.0, 1.0)
    var = np.asarray(attrs["variance"], dtype=f32)
    variances = ops.ones_like(boxes) * (var if var.size == 4 else np.repeat(var, 4))
    return ops.stack([ops.reshape(boxes, (-1,)), ops.reshape(variances, (-1,))])[None]
