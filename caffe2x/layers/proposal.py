"""Faster R-CNN's region proposals as a built-in op: py-faster-rcnn's Python layer
``rpn.proposal_layer.ProposalLayer`` (also R-FCN's) and OpenCV's ``Proposal`` type (``proposal_param``).

====================  ==========================================================================
op ``Proposal``       inputs ``cls_prob`` (1, 2A, H, W), ``bbox_pred`` (1, 4A, H, W), ``im_info`` (1, >=3)
attrs                 feat_stride, anchors (A x [x1, y1, x2, y2], float64), pre_nms_topn,
                      post_nms_topn, nms_thresh, min_size, with_scores
outputs               rois (R, 5) ``[0, x1, y1, x2, y2]``; with a second top the scores (R, 1)
====================  ==========================================================================

py-faster-rcnn's test-time forward (``lib/rpn/proposal_layer.py``, ``generate_anchors.py``,
``fast_rcnn/bbox_transform.py``, ``nms``), which every target follows operation by operation:

* anchors: ``generate_anchors(base_size=16, ratios, scales)`` -- the base box ``[0, 0, 15, 15]``; per
  ratio ``r`` widths ``round(sqrt(256 / r))`` and heights ``round(width * r)`` (numpy's round, half to
  even), then per scale ``s`` the box of ``s * width`` x ``s * height`` around the centre 7.5 with the
  "+1" convention (``x1 = 7.5 - 0.5 (w - 1)``, ``x2 = 7.5 + 0.5 (w - 1)``), ratios outer, scales
  inner. Cell ``(h, w)`` shifts them by ``(w, h) * feat_stride``; the order is cell-major (h, w, anchor)
  and the anchors become float32 (``boxes.astype(deltas.dtype)``).
* scores: the second half of ``cls_prob``'s channels (the foreground), in (h, w, anchor) order.
* ``bbox_transform_inv`` in float32: ``width = x2 - x1 + 1``, ``ctr = x1 + 0.5 * width``, centre
  ``dx * width + ctr``, size ``exp(dw) * width``, box ``ctr' -/+ 0.5 * size'``.
* clipped to ``[0, im_info[1] - 1]`` (x) and ``[0, im_info[0] - 1]`` (y); kept when both sides
  ``x2 - x1 + 1`` are ``>= min_size * im_info[2]``.
* sorted by score, descending, stably (numpy's ``argsort()[::-1]`` leaves the order of equal scores
  to its quicksort; caffe2x fixes it: the earlier box first), the first ``pre_nms_topn`` (> 0) kept.
* greedy NMS, float32, "+1" areas: ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``, intersection sides
  ``max(0, min(x2) - max(x1) + 1)``, ``iou = inter / (area_i + area_j - inter)``; a box is suppressed
  by a kept box when ``iou > nms_thresh`` (``gpu_nms`` and ``py_cpu_nms``, the test-time default;
  ``cpu_nms`` suppresses at ``>=``, which differs only for an overlap exactly equal to the threshold).
* the first ``post_nms_topn`` (> 0) kept boxes, as ``[0, x1, y1, x2, y2]``.

py-faster-rcnn supports one image per batch and so does this op. The number of rois depends on the
data: the graph's shape is the upper bound ``min(post_nms_topn, H * W * A)``.

The defaults are py-faster-rcnn's ``cfg.TEST`` (pre 6000, post 300, NMS 0.7, min size 16); its
``param_str`` carries only ``feat_stride`` and optionally ``scales`` / ``ratios``, and caffe2x also
reads ``pre_nms_topN``, ``post_nms_topN``, ``nms_thresh`` and ``min_size`` there (the way to set them).
``param_str`` is parsed by a small grammar (:func:`parse_param_str`), never evaluated.
"""
from __future__ import annotations

import ast
import math
from typing import Any

import numpy as np

from caffe2x.caffe.reader import KNOWN_PYTHON_LAYERS, BlobSource, LayerSpec, layer_handler
from caffe2x.errors import Caffe2xError
from caffe2x.graph.checks import MAX_DIM
from caffe2x.graph.ir import Graph, Node, Shape, shape_function
from caffe2x.graph.reference import op as reference_op

f32 = np.float32

#: (module, class) of the Python layers read as Proposal
PROPOSAL_PYTHON_LAYERS = {("rpn.proposal_layer", "ProposalLayer"), ("proposal_layer", "ProposalLayer")}
#: param_str keys: py-faster-rcnn's own, then the cfg.TEST settings caffe2x lets the prototxt set
PARAM_KEYS = ("feat_stride", "scales", "ratios", "pre_nms_topN", "post_nms_topN", "nms_thresh", "min_size")
KNOWN_PYTHON_LAYERS.update(PROPOSAL_PYTHON_LAYERS)
DEFAULTS = {"scales": (8, 16, 32), "ratios": (0.5, 1, 2), "pre_nms_topN": 6000, "post_nms_topN": 300,
            "nms_thresh": 0.7, "min_size": 16}


# =========================================================================== param_str
def _split_top_level(text: str) -> list[str]:
    """``text`` cut at commas and newlines outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced brackets")
        elif ch in ",\n;" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError("unbalanced quotes or brackets")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _key_end(item: str) -> int:
    """Index of the ``:`` that ends the key of ``key: value`` (outside quotes)."""
    quote = ""
    for i, ch in enumerate(item):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == ":":
            return i
    raise ValueError(f"{item!r} is not 'key: value'")


def parse_param_str(text: str) -> dict[str, Any]:
    """py-faster-rcnn's YAML ``param_str`` (``"'feat_stride': 16"``, ``"{'feat_stride': 16, 'scales':
    [8, 16, 32]}"``, ``"'scales': !!python/tuple [4, 8, 16, 32]"``) as a dict of numbers and lists.

    A small grammar, never ``eval``: entries ``key: value`` separated by commas, newlines or
    semicolons, optionally inside ``{}``; a key is a quoted string or a bare word; a value a number,
    or a list/tuple of numbers (``ast.literal_eval``), optionally tagged ``!!python/tuple``. Raises
    ``ValueError`` saying what is wrong."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise ValueError("an opening '{' without its '}'")
        body = body[1:-1]
    out: dict[str, Any] = {}
    for item in _split_top_level(body):
        cut = _key_end(item)
        raw_key, raw_value = item[:cut].strip(), item[cut + 1:].strip()
        if raw_key[:1] in "'\"":
            key = ast.literal_eval(raw_key)
        else:
            key = raw_key
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"key {raw_key!r} is not a name")
        for tag in ("!!python/tuple", "!!python/list"):
            if raw_value.startswith(tag):
                raw_value = raw_value[len(tag):].strip()
        try:
            value = ast.literal_eval(raw_value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"value of {key!r} ({raw_value!r}) is not a number or a list of numbers") from None
        items = value if isinstance(value, (list, tuple)) else [value]
        if isinstance(value, bool) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            raise ValueError(f"value of {key!r} ({raw_value!r}) is not a number or a list of numbers")
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


# =========================================================================== anchors
def generate_anchors(base_size: float = 16, ratios: Any = (0.5, 1, 2), scales: Any = (8, 16, 32)) -> np.ndarray:
    """py-faster-rcnn's ``generate_anchors`` (float64, (len(ratios) * len(scales), 4)), written out."""
    base = np.array([1, 1, base_size, base_size], dtype=np.float64) - 1

    def whctrs(box: np.ndarray) -> tuple[Any, Any, Any, Any]:
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        return w, h, box[0] + 0.5 * (w - 1), box[1] + 0.5 * (h - 1)

    def boxes(ws: np.ndarray, hs: np.ndarray, cx: Any, cy: Any) -> np.ndarray:
        ws, hs = ws[:, None], hs[:, None]
        return np.hstack((cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)))

    w, h, cx, cy = whctrs(base)
    ratios = np.asarray(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))
    by_ratio = boxes(ws, np.round(ws * ratios), cx, cy)
    scales = np.asarray(scales, dtype=np.float64)
    out = []
    for box in by_ratio:
        w, h, cx, cy = whctrs(box)
        out.append(boxes(w * scales, h * scales, cx, cy))
    return np.vstack(out)


def shifted_anchors(anchors: np.ndarray, feat_stride: int, height: int, width: int) -> np.ndarray:
    """Every cell's anchors in (h, w, anchor) order, float32: (H * W * A, 4)."""
    sx, sy = np.meshgrid(np.arange(width) * feat_stride, np.arange(height) * feat_stride)
    shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1).astype(np.float64)
    return (np.asarray(anchors, np.float64)[None] + shifts[:, None]).reshape(-1, 4).astype(np.float32)


# =========================================================================== reader
def _settings(layer: Any, values: dict[str, Any], where: str) -> dict[str, Any]:
    """The op's attributes from the settings (param_str keys), checked."""
    name = layer.name

    def bad(msg: str) -> Caffe2xError:
        return Caffe2xError(f"layer {name!r} ({where}): {msg}")

    unknown = sorted(set(values) - set(PARAM_KEYS))
    if unknown:
        raise bad(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(PARAM_KEYS)})")
    if "feat_stride" not in values:
        raise bad("needs feat_stride")
    stride = values["feat_stride"]
    if not isinstance(stride, int) or not 0 < stride <= MAX_DIM:  # past int64 the anchor grid overflowed
        raise bad(f"feat_stride must be a positive integer up to {MAX_DIM}, got {stride!r}")
    merged = {**DEFAULTS, **values}
    scales, ratios = merged["scales"], merged["ratios"]
    scales = list(scales) if isinstance(scales, (list, tuple)) else [scales]
    ratios = list(ratios) if isinstance(ratios, (list, tuple)) else [ratios]
    if not scales or not ratios or not all(0 < v < math.inf for v in (*scales, *ratios)):
        raise bad("scales and ratios must be positive finite numbers")
    counts = {k: merged[k] for k in ("pre_nms_topN", "post_nms_topN")}
    if any(not isinstance(v, int) for v in counts.values()):
        raise bad("pre_nms_topN and post_nms_topN must be integers (0 or less: no limit)")
    thresh, min_size = float(merged["nms_thresh"]), float(merged["min_size"])
    if not 0 <= thresh <= 1 or not 0 <= min_size < math.inf:
        raise bad("nms_thresh must be in [0, 1] and min_size a finite number >= 0")
    anchors = generate_anchors(16, ratios, scales)
    return {"feat_stride": stride, "anchors": anchors.tolist(), "pre_nms_topn": counts["pre_nms_topN"],
            "post_nms_topn": counts["post_nms_topN"], "nms_thresh": thresh, "min_size": min_size,
            "with_scores": len(layer.top) > 1}


def _check_inputs(name: str, a: dict[str, Any], ins: list[Shape]) -> tuple[int, int]:
    if len(ins) != 3:
        raise Caffe2xError(f"layer {name!r} (Proposal) takes 3 inputs (cls_prob, bbox_pred, im_info), got {len(ins)}")
    scores, deltas, info = ins
    count = len(a["anchors"])
    if len(scores) != 4 or len(deltas) != 4:
        raise Caffe2xError(f"layer {name!r} (Proposal) needs 4-D scores and box deltas, got {list(scores)}, "
                           f"{list(deltas)}")
    if scores[1] != 2 * count or deltas[1] != 4 * count:
        raise Caffe2xError(f"layer {name!r} (Proposal): {count} anchors need {2 * count} score and {4 * count} "
                           f"delta channels, got {scores[1]} and {deltas[1]}")
    if scores[0] != 1 or deltas[0] != 1 or tuple(deltas[2:]) != tuple(scores[2:]):
        raise Caffe2xError(f"layer {name!r} (Proposal) supports one image (as py-faster-rcnn): scores "
                           f"{list(scores)}, deltas {list(deltas)}")
    if not info or info[0] != 1 or int(np.prod(info[1:])) < 3:
        raise Caffe2xError(f"layer {name!r} (Proposal): im_info must be (1, 3) [height, width, scale], got {list(info)}")
    return int(scores[2]), int(scores[3])


def _spec(layer: Any, attrs: dict[str, Any], ins: list[Shape]) -> LayerSpec:
    if len(layer.top) not in (1, 2):
        raise Caffe2xError(f"layer {layer.name!r} (Proposal) has 1 or 2 tops (rois, scores), got {len(layer.top)}")
    _check_inputs(layer.name, attrs, ins)
    return LayerSpec("Proposal", attrs)


def python_module_class(layer: Any) -> tuple[str, str]:
    p = layer.python_param
    return str(p.module), str(p.layer)


def is_proposal_python_layer(layer: Any) -> bool:
    return python_module_class(layer) in PROPOSAL_PYTHON_LAYERS


@layer_handler("Python")
def _python_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """Only the Python layers caffe2x knows reach this handler (the reader refuses the others)."""
    module, cls = python_module_class(layer)
    where = f"Python layer, module {module!r}, class {cls!r}"
    if (module, cls) not in PROPOSAL_PYTHON_LAYERS:  # pragma: no cover - the reader refuses these first
        raise Caffe2xError(f"layer {layer.name!r} ({where}) is not a Python layer caffe2x knows")
    try:
        values = parse_param_str(str(layer.python_param.param_str))
    except (ValueError, SyntaxError) as exc:
        raise Caffe2xError(f"layer {layer.name!r} ({where}): param_str "
                           f"{str(layer.python_param.param_str)!r} cannot be read: {exc}") from None
    return _spec(layer, _settings(layer, values, where), ins)


@layer_handler("Proposal")
def _proposal_layer(layer: Any, ins: list[Shape], blobs: BlobSource) -> LayerSpec:
    """OpenCV's ``Proposal`` type: the same layer with its settings in ``proposal_param``."""
    p = layer.proposal_param
    if p.HasField("base_size") and int(p.base_size) != 16:
        raise Caffe2xError(f"layer {layer.name!r} (Proposal): base_size {p.base_size} is not supported "
                           f"(py-faster-rcnn's anchors use 16)")
    values: dict[str, Any] = {"feat_stride": int(p.feat_stride), "pre_nms_topN": int(p.pre_nms_topn),
                              "post_nms_topN": int(p.post_nms_topn), "nms_thresh": float(f32(p.nms_thresh)),
                              "min_size": int(p.min_size)}
    if len(p.ratio):
        values["ratios"] = [float(f32(r)) for r in p.ratio]
    if len(p.scale):
        values["scales"] = [float(f32(s)) for s in p.scale]
    return _spec(layer, _settings(layer, values, "Proposal"), ins)


def max_rois(a: dict[str, Any], height: int, width: int) -> int:
    total = height * width * len(a["anchors"])
    if a["pre_nms_topn"] > 0:
        total = min(total, a["pre_nms_topn"])
    if a["post_nms_topn"] > 0:
        total = min(total, a["post_nms_topn"])
    return total


@shape_function("Proposal")
def _proposal_shape(node: Node, ins: list[Shape], graph: Graph) -> list[Shape]:
    h, w = _check_inputs(node.name, node.attrs, ins)
    rows = max_rois(node.attrs, h, w)
    return [(rows, 5), (rows, 1)] if node.attrs["with_scores"] else [(rows, 5)]


# =========================================================================== reference
def decode(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """``bbox_transform_inv`` in float32 (anchors and deltas (K, 4))."""
    one, half = f32(1), f32(0.5)
    widths = anchors[:, 2] - anchors[:, 0] + one
    heights = anchors[:, 3] - anchors[:, 1] + one
    ctr_x = anchors[:, 0] + half * widths
    ctr_y = anchors[:, 1] + half * heights
    px = deltas[:, 0] * widths + ctr_x
    py = deltas[:, 1] * heights + ctr_y
    with np.errstate(over="ignore"):
        pw = np.exp(deltas[:, 2]) * widths
        ph = np.exp(deltas[:, 3]) * heights
    return np.stack([px - half * pw, py - half * ph, px + half * pw, py + half * ph], axis=1).astype(np.float32)


def nms_plus_one(boxes: np.ndarray, thresh: float, limit: int = 0) -> list[int]:
    """Greedy NMS over ``boxes`` already in score order, with py-faster-rcnn's "+1" areas (float32);
    stops after ``limit`` keeps when ``limit > 0`` (later keeps cannot change earlier ones)."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    one, zero = f32(1), f32(0)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    thr = f32(thresh)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        if limit > 0 and len(keep) >= limit:
            break
        w = np.maximum(zero, np.minimum(x2[i], x2) - np.maximum(x1[i], x1) + one)
        h = np.maximum(zero, np.minimum(y2[i], y2) - np.maximum(y1[i], y1) + one)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas - inter)
        later = np.arange(len(boxes)) > i
        suppressed |= later & (iou > thr)
    return keep


def proposals(scores: np.ndarray, deltas: np.ndarray, im_info: np.ndarray, a: dict[str, Any]
              ) -> tuple[np.ndarray, np.ndarray]:
    """The op's rois (R, 5) and scores (R, 1) for one image (see the module docstring)."""
    count = len(a["anchors"])
    _, _, h, w = scores.shape
    fg = scores[0, count:].astype(np.float32).transpose(1, 2, 0).reshape(-1)
    d = deltas[0].astype(np.float32).transpose(1, 2, 0).reshape(-1, 4)
    info = im_info.reshape(-1).astype(np.float32)
    boxes = decode(shifted_anchors(np.asarray(a["anchors"]), a["feat_stride"], h, w), d)
    zero = f32(0)
    boxes[:, 0::2] = np.maximum(np.minimum(boxes[:, 0::2], info[1] - f32(1)), zero)
    boxes[:, 1::2] = np.maximum(np.minimum(boxes[:, 1::2], info[0] - f32(1)), zero)
    min_size = f32(a["min_size"]) * info[2]
    ws = boxes[:, 2] - boxes[:, 0] + f32(1)
    hs = boxes[:, 3] - boxes[:, 1] + f32(1)
    keep = np.nonzero((ws >= min_size) & (hs >= min_size))[0]
    boxes, fg = boxes[keep], fg[keep]
    order = np.argsort(-fg, kind="stable")
    if a["pre_nms_topn"] > 0:
        order = order[:a["pre_nms_topn"]]
    boxes, fg = boxes[order], fg[order]
    kept = nms_plus_one(boxes, a["nms_thresh"], a["post_nms_topn"])
    rois = np.zeros((len(kept), 5), dtype=np.float32)
    rois[:, 1:] = boxes[kept]
    return rois, fg[kept].reshape(-1, 1)


@reference_op("Proposal")
def _proposal(node: Node, ins: list[np.ndarray], graph: Graph) -> list[np.ndarray]:
    rois, scores = proposals(ins[0], ins[1], ins[2], node.attrs)
    return [rois, scores] if node.attrs["with_scores"] else [rois]


__all__ = ["parse_param_str", "generate_anchors", "shifted_anchors", "proposals", "nms_plus_one", "decode",
           "is_proposal_python_layer", "PROPOSAL_PYTHON_LAYERS"]
