"""SSD's detection layers: Normalize, PriorBox, DetectionOutput (weiliu89/caffe, branch ``ssd``).

Everything is resolved at read time from the prototxt and the input shapes, so a target only
evaluates formulas; PriorBox's ``rule`` says which of ``img`` and ``step`` Caffe recomputes when the
net is reshaped (:func:`caffe2x.graph.formulas.prior_attrs`: without img_size the image input's H x W, without step image
over feature size), so an SSD without img_size runs at any size and one with it keeps its read size.

===============  ===========================================================  =====================
op               attrs                                                        params
===============  ===========================================================  =====================
Normalize        across_spatial, channel_shared, eps                          weight (1) or (C)
PriorBox         min_sizes, max_sizes (ints: the fork truncates them),        -
                 aspect_ratios (1 first, deduplicated, flipped), clip,
                 variance (1 or 4 values), img [h, w], step [h, w], offset,
                 offsets (TextBoxes: [[offset_h, offset_w], ...], optional),
                 rule {img: 'input' | 'fixed', step: 'derived' | 'fixed'}
DetectionOutput  num_classes, share_location, background_label_id,            -
                 nms_threshold, top_k, eta, keep_top_k, confidence_threshold,
                 code_type ('corner' | 'center_size' | 'corner_size'),
                 variance_encoded_in_target
===============  ===========================================================  =====================

Caffe's formulas (``normalize_layer.cpp``, ``prior_box_layer.cpp``, ``bbox_util.cpp``):

* Normalize: ``y = x / sqrt(sum x^2 + eps) * scale``; the sum runs over C, H, W of one image when
  ``across_spatial`` (default), else over C at every position; ``scale`` is one value or one per
  channel. eps defaults to 1e-10 and sits *inside* the square root.
* PriorBox, for every cell (h, w) of the feature map, centre ``((w + offset) * step_w, (h + offset)
  * step_h)`` and every min size ``m`` (an int in the fork): the square box of side ``m``, then (with
  max sizes) the square of side ``sqrt(m * M)``, then one box ``m*sqrt(ar) x m/sqrt(ar)`` per aspect
  ratio other than 1. With TextBoxes' repeated ``offset_h``/``offset_w`` every such box is repeated
  at each centre ``((w + offset_w[j]) * step_w, (h + offset_h[j]) * step_h)`` (sizes outer, centres
  inner, as OpenCV's ``prior_box_layer.cpp``). Coordinates are divided by the image width/height, clipped to [0, 1] with
  ``clip``; the second channel repeats the variances. Output ``(1, 2, H*W*num_priors*4)``.
* DetectionOutput: boxes are decoded from the priors (CORNER adds ``var * loc``; CENTER_SIZE moves the
  prior's centre by ``var * loc * prior size`` and scales its size by ``exp(var * loc)``; CORNER_SIZE
  adds ``var * loc * prior size`` to the corners; ``variance_encoded_in_target`` drops ``var``), never
  clipped. Per image and per class other than the background: the scores ``> confidence_threshold``
  (stable-sorted descending, first ``top_k``) go through greedy NMS -- a box is kept when its IoU with
  every kept box is ``<= threshold``; after each keep, with ``eta < 1`` and a threshold above 0.5, the
  threshold is multiplied by ``eta``. Then, when more than ``keep_top_k`` survive, the best
  ``keep_top_k`` over all classes are kept. Rows ``[image, label, score, xmin, ymin, xmax, ymax]``,
  by image, by label, in NMS order; no detection at all gives one row ``[i, -1, ..., -1]`` per image.
  The number of rows depends on the data: the graph's shape for the output is the upper bound.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from caffe2x.caffe.reader import BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError
from caffe2x.graph.formulas import num_priors, prior_attrs, prior_boxes, prior_follows_input
from caffe2x.graph.ir import Graph, Node, Shape, check_pinned, shape_function
from caffe2x.graph.reference import op as reference_op

f32 = np.float32
#: Caffe's -FLT_MAX, the confidence threshold when none is given
FLT_MAX = float(np.finfo(np.float32).max)
CODE_TYPES = {1: "corner", 2: "center_size", 3: "corner_size"}


def _inputs(layer: Any, ins: list[Shape], *counts: int) -> list[Shape]:
    if len(ins) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise Caffe2xError(f"layer {layer.name!r} ({layer.type}) takes {want} input(s), got {len(ins)}")
    return ins


def sized_blob(blobs: BlobSource, index: int, shape: Shape, kind: str, role: str, layer: str) -> np.ndarray:
    """Blob ``index`` reshaped to ``shape`` when it holds that many values (SSD stores a shared scale as
    a 0-d blob, other writers as ``(1,)``)."""
    if blobs.blobs is not None and index < len(blobs.blobs):
        arr = blobs.stored(index, role)
        if arr.size != math.prod(shape):
            raise Caffe2xError(f"layer {layer!r} blob {index} ({role}) has shape {list(arr.shape)} in the "
                               f"caffemodel, the net needs {list(shape)}")
        return arr.reshape(shape)
    return blobs.get(index, shape, kind, role)


# =========================================================================== Normalize
@layer_handler("Normalize")
def _normalize_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    (x,) = _inputs(layer, ins, 1)
    if len(x) < 2:
        raise Caffe2xError(f"layer {layer.name!r} (Normalize) needs at least a 2-D input, got {list(x)}")
    p = layer.norm_param
    shared = bool(p.channel_shared)
    scale = sized_blob(blobs, 0, (1,) if shared else (x[1],), "gamma", "scale", layer.name)
    return LayerSpec("Normalize", {"across_spatial": bool(p.across_spatial), "channel_shared": shared,
                                   "eps": float(p.eps)}, {"weight": scale})


@shape_function("Normalize")
def _normalize_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    (x,) = ins
    want = (1,) if node.attrs["channel_shared"] else (x[1],)
    t = graph.tensors.get(node.params.get("weight", ""))
    if t is None or tuple(t.shape) != want:
        raise Caffe2xError(f"layer {node.name!r} (Normalize) needs a scale of shape {list(want)}")
    return [x]


@reference_op("Normalize")
def _normalize(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    (x,) = ins
    a = node.attrs
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    sq = flat * flat
    if a["across_spatial"]:
        norm = np.sqrt(sq.sum(axis=(1, 2), dtype=np.float32) + f32(a["eps"])).reshape(n, 1, 1)
    else:
        norm = np.sqrt(sq.sum(axis=1, dtype=np.float32) + f32(a["eps"]))[:, None, :]
    y = flat / norm
    scale = graph.param(node, "weight")
    y = y * (scale.reshape(()) if a["channel_shared"] else scale.reshape(1, c, 1))
    return [y.reshape(x.shape)]


# =========================================================================== PriorBox
@layer_handler("PriorBox")
def _prior_box_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _inputs(layer, ins, 1, 2)
    p = layer.prior_box_param
    name = layer.name
    if not len(p.min_size):
        raise Caffe2xError(f"layer {name!r} (PriorBox) needs min_size")
    if any(m <= 0 for m in p.min_size):
        raise Caffe2xError(f"layer {name!r} (PriorBox): min_size must be positive")
    min_sizes = [int(m) for m in p.min_size]  # the fork keeps them in an int
    max_sizes = [int(m) for m in p.max_size]
    if max_sizes:
        if len(max_sizes) != len(min_sizes):
            raise Caffe2xError(f"layer {name!r} (PriorBox): {len(max_sizes)} max_size for {len(min_sizes)} min_size")
        if any(M <= m for m, M in zip(p.min_size, p.max_size)):
            raise Caffe2xError(f"layer {name!r} (PriorBox): max_size must be greater than min_size")
    ratios = [1.0]
    for ar in p.aspect_ratio:
        ar = f32(ar)
        if any(abs(f32(ar - f32(r))) < 1e-6 for r in ratios):
            continue
        ratios.append(float(ar))
        if p.flip:
            ratios.append(float(f32(1.0 / float(ar))))
    variance = [float(v) for v in p.variance]
    if len(variance) > 1 and len(variance) != 4:
        raise Caffe2xError(f"layer {name!r} (PriorBox): give 1 or 4 variance values, got {len(variance)}")
    if any(v <= 0 for v in variance):
        raise Caffe2xError(f"layer {name!r} (PriorBox): variance must be positive")
    if p.HasField("img_h") or p.HasField("img_w"):
        if p.HasField("img_size"):
            raise Caffe2xError(f"layer {name!r} (PriorBox): give img_size or img_h/img_w, not both")
        img = [int(p.img_h), int(p.img_w)]
    elif p.HasField("img_size"):
        img = [int(p.img_size)] * 2
    else:
        if len(ins) < 2 or len(ins[1]) != 4:
            raise Caffe2xError(f"layer {name!r} (PriorBox) needs the image as second input (or img_size)")
        img = [int(ins[1][2]), int(ins[1][3])]
    if min(img) <= 0:
        raise Caffe2xError(f"layer {name!r} (PriorBox): image size must be positive")
    x = ins[0]
    if len(x) != 4:
        raise Caffe2xError(f"layer {name!r} (PriorBox) needs a 4-D feature map, got {list(x)}")
    if p.HasField("step_h") or p.HasField("step_w"):
        if p.HasField("step"):
            raise Caffe2xError(f"layer {name!r} (PriorBox): give step or step_h/step_w, not both")
        step = [float(p.step_h), float(p.step_w)]
    elif p.HasField("step"):
        step = [float(p.step)] * 2
    else:
        step = [0.0, 0.0]
    derived = step[0] <= 0 or step[1] <= 0
    if derived:  # Caffe: image size over feature size, as a float
        step = [float(f32(img[0]) / f32(x[2])), float(f32(img[1]) / f32(x[3]))]
    # which of img and step Caffe recomputes when the net is reshaped: img from the image input unless
    # img_size / img_h / img_w are given, step as image over feature size unless step / step_h / step_w are
    rule = {"img": "fixed" if p.HasField("img_h") or p.HasField("img_w") or p.HasField("img_size") else "input",
            "step": "derived" if derived else "fixed"}
    attrs = {"min_sizes": min_sizes, "max_sizes": max_sizes, "aspect_ratios": ratios, "clip": bool(p.clip),
             "variance": variance or [0.1], "img": img, "step": step, "offset": float(p.offset), "rule": rule}
    offset_h, offset_w = _repeated(p, "offset_h"), _repeated(p, "offset_w")
    if offset_h or offset_w:  # TextBoxes: one box per size at each (offset_h[i], offset_w[i]) of the cell
        if len(offset_h) != len(offset_w):
            raise Caffe2xError(f"layer {name!r} (PriorBox): {len(offset_h)} offset_h for {len(offset_w)} offset_w")
        if p.HasField("offset"):
            raise Caffe2xError(f"layer {name!r} (PriorBox): give offset or offset_h/offset_w, not both")
        attrs["offsets"] = [[float(h), float(w)] for h, w in zip(offset_h, offset_w)]
    return LayerSpec("PriorBox", attrs)


def _repeated(p: Any, field: str) -> list[float]:
    """A repeated field of ``p`` (empty when a ``--proto`` schema has no such field)."""
    return list(getattr(p, field)) if field in p.DESCRIPTOR.fields_by_name else []


@shape_function("PriorBox")
def _prior_box_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    if not prior_follows_input(node.attrs):  # img_size given: the feature map it was read at (Caffe then
        check_pinned(node, ins[:1], [graph.shapes.get(node.inputs[0])])  # never reads the image input)
    x = ins[0]
    return [(1, 2, x[2] * x[3] * num_priors(node.attrs) * 4)]


@reference_op("PriorBox")
def _prior_box(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    a = prior_attrs(node.attrs, ins[0].shape, ins[1].shape if len(ins) > 1 else None)
    return [prior_boxes(a, ins[0].shape[2], ins[0].shape[3])]


# =========================================================================== DetectionOutput
@layer_handler("DetectionOutput")
def _detection_output_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    _inputs(layer, ins, 3)
    p = layer.detection_output_param
    name = layer.name
    if not p.HasField("num_classes") or p.num_classes < 1:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput) needs num_classes")
    nms = p.nms_param
    if not 0 < nms.eta <= 1:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): eta must be in (0, 1], got {nms.eta}")
    if nms.nms_threshold < 0:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): nms_threshold must be >= 0")
    if int(p.code_type) not in CODE_TYPES:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): unknown code_type {p.code_type}")
    attrs = {
        "num_classes": int(p.num_classes),
        "share_location": bool(p.share_location),
        "background_label_id": int(p.background_label_id),
        "nms_threshold": float(nms.nms_threshold),
        "top_k": int(nms.top_k) if nms.HasField("top_k") else -1,
        "eta": float(nms.eta),
        "keep_top_k": int(p.keep_top_k),
        "confidence_threshold": float(p.confidence_threshold) if p.HasField("confidence_threshold") else -FLT_MAX,
        "code_type": CODE_TYPES[int(p.code_type)],
        "variance_encoded_in_target": bool(p.variance_encoded_in_target),
    }
    _check_detection_inputs(name, attrs, ins)
    return LayerSpec("DetectionOutput", attrs)


def _check_detection_inputs(name: str, a: dict[str, Any], ins: list[Shape]) -> int:
    loc, conf, prior = ins
    if len(prior) != 3 or prior[1] != 2 or prior[2] % 4:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): the prior input must be (1, 2, P*4) as PriorBox "
                           f"makes it, got {list(prior)}")
    priors = prior[2] // 4
    loc_classes = 1 if a["share_location"] else a["num_classes"]
    if int(np.prod(loc[1:])) != priors * loc_classes * 4:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): {int(np.prod(loc[1:]))} location values per image "
                           f"for {priors} priors x {loc_classes} location class(es) x 4")
    if int(np.prod(conf[1:])) != priors * a["num_classes"]:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): {int(np.prod(conf[1:]))} confidences per image "
                           f"for {priors} priors x {a['num_classes']} classes")
    if loc[0] != conf[0]:
        raise Caffe2xError(f"layer {name!r} (DetectionOutput): location and confidence batch sizes differ")
    return priors


def max_detections(a: dict[str, Any], batch: int, priors: int) -> int:
    """Upper bound of DetectionOutput's rows (the graph's static shape for its output)."""
    classes = a["num_classes"] - (1 if 0 <= a["background_label_id"] < a["num_classes"] else 0)
    per_class = min(a["top_k"], priors) if a["top_k"] > -1 else priors
    per_image = classes * per_class
    if a["keep_top_k"] > -1:
        per_image = min(per_image, a["keep_top_k"])
    return max(batch * per_image, batch)


@shape_function("DetectionOutput")
def _detection_output_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    priors = _check_detection_inputs(node.name, node.attrs, ins)
    return [(1, 1, max_detections(node.attrs, ins[0][0], priors), 7)]


def decode_boxes(loc: np.ndarray, prior: np.ndarray, variance: np.ndarray, code_type: str,
                 encoded_in_target: bool) -> np.ndarray:
    """Caffe's DecodeBBox for ``loc`` (P, 4) against priors and variances (P, 4), float32 throughout."""
    loc = loc.astype(np.float32)
    pxmin, pymin, pxmax, pymax = (prior[:, i] for i in range(4))
    var = np.ones_like(variance) if encoded_in_target else variance
    if code_type == "corner":
        if encoded_in_target:
            return (prior + loc).astype(np.float32)
        return (prior + var * loc).astype(np.float32)
    pw, ph = pxmax - pxmin, pymax - pymin
    if np.any(pw <= 0) or np.any(ph <= 0):
        raise Caffe2xError("DetectionOutput: a prior box has no positive width and height")
    if code_type == "center_size":
        pcx, pcy = (pxmin + pxmax) / f32(2), (pymin + pymax) / f32(2)
        if encoded_in_target:
            cx, cy = loc[:, 0] * pw + pcx, loc[:, 1] * ph + pcy
            w, h = np.exp(loc[:, 2]) * pw, np.exp(loc[:, 3]) * ph
        else:
            cx, cy = var[:, 0] * loc[:, 0] * pw + pcx, var[:, 1] * loc[:, 1] * ph + pcy
            with np.errstate(over="ignore"):
                w, h = np.exp(var[:, 2] * loc[:, 2]) * pw, np.exp(var[:, 3] * loc[:, 3]) * ph
        return np.stack([cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2)], axis=1).astype(np.float32)
    # corner_size
    if encoded_in_target:
        d = loc * np.stack([pw, ph, pw, ph], axis=1)
    else:
        d = np.stack([var[:, 0] * loc[:, 0] * pw, var[:, 1] * loc[:, 1] * ph,
                      var[:, 2] * loc[:, 2] * pw, var[:, 3] * loc[:, 3] * ph], axis=1)
    return (prior + d).astype(np.float32)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """Caffe's BBoxSize (normalized): width * height, 0 for an inverted box."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.where((w < 0) | (h < 0), f32(0), w * h).astype(np.float32)


def jaccard(box: np.ndarray, size: np.float32, others: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Caffe's JaccardOverlap of one box with each of ``others`` (float32)."""
    iw = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (size + sizes - inter)
    return np.where((iw > 0) & (ih > 0), iou, f32(0)).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, a: dict[str, Any]) -> list[int]:
    """Caffe's ApplyNMSFast: indices kept, in the order kept."""
    cand = np.nonzero(scores > f32(a["confidence_threshold"]))[0]
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    if a["top_k"] > -1:
        cand = cand[:a["top_k"]]
    sizes = box_sizes(boxes)
    threshold = f32(a["nms_threshold"])
    eta = f32(a["eta"])
    kept: list[int] = []
    for i in cand:
        keep = not kept or bool(np.all(jaccard(boxes[i], sizes[i], boxes[kept], sizes[kept]) <= threshold))
        if keep:
            kept.append(int(i))
            if eta < 1 and threshold > 0.5:
                threshold = f32(threshold * eta)
    return kept


def detection_output(loc: np.ndarray, conf: np.ndarray, prior: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """DetectionOutput's ``(1, 1, rows, 7)`` result (see the module docstring)."""
    n = loc.shape[0]
    num_priors_ = prior.shape[2] // 4
    classes = a["num_classes"]
    loc_classes = 1 if a["share_location"] else classes
    loc = loc.reshape(n, num_priors_, loc_classes, 4)
    conf = conf.reshape(n, num_priors_, classes)
    pbox = prior[0, 0].reshape(num_priors_, 4)
    pvar = prior[0, 1].reshape(num_priors_, 4)
    rows: list[list[float]] = []
    for i in range(n):
        decoded = {}
        found: dict[int, list[int]] = {}
        for c in range(classes):
            if c == a["background_label_id"]:
                continue
            lc = 0 if a["share_location"] else c
            if lc not in decoded:
                decoded[lc] = decode_boxes(loc[i, :, lc], pbox, pvar, a["code_type"], a["variance_encoded_in_target"])
            found[c] = nms(decoded[lc], conf[i, :, c], a)
        total = sum(len(v) for v in found.values())
        if a["keep_top_k"] > -1 and total > a["keep_top_k"]:
            pairs = [(-float(conf[i, j, c]), c, j) for c, js in found.items() for j in js]
            pairs.sort(key=lambda t: t[0])  # stable: ties keep label, then NMS order
            best = {(c, j) for _, c, j in pairs[:a["keep_top_k"]]}
            found = {c: [j for j in js if (c, j) in best] for c, js in found.items()}
        for c in sorted(found):
            boxes = decoded[0 if a["share_location"] else c]
            for j in found[c]:
                rows.append([i, c, float(conf[i, j, c]), *boxes[j].tolist()])
    if not rows:
        rows = [[i] + [-1.0] * 6 for i in range(n)]
    return np.asarray(rows, dtype=np.float32).reshape(1, 1, len(rows), 7)


@reference_op("DetectionOutput")
def _detection_output(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    loc, conf, prior = ins
    return [detection_output(loc, conf, prior, node.attrs)]
