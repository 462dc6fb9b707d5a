"""SSD's Normalize, PriorBox and DetectionOutput as exact ``nn.Module`` classes (formulas:
:mod:`caffe2x.layers.detection`).

The modules use only torch and math, so generated code could carry them. DetectionOutput returns a
``(1, 1, rows, 7)`` tensor whose row count depends on the data, as Caffe's does; its NMS is the fork's
greedy loop (with ``eta``), run in Python over each class's candidates.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

import torch
from torch import nn

from caffe2x.graph.formulas import prior_follows_input
from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, _tensors, builder


class CaffeNormalize(nn.Module):
    """SSD's Normalize: ``x / sqrt(sum x^2 + eps) * weight``, the sum over C, H, W of an image
    (``across_spatial``) or over C at each position; ``weight`` is (1,) or (C,)."""

    def __init__(self, channels: int, across_spatial: bool = True, channel_shared: bool = True,
                 eps: float = 1e-10) -> None:
        super().__init__()
        self.across_spatial = across_spatial
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1 if channel_shared else channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        flat = x.reshape(n, c, -1)
        sq = flat * flat
        dims = (1, 2) if self.across_spatial else (1,)
        y = flat / torch.sqrt(sq.sum(dim=dims, keepdim=True) + self.eps)
        scale = self.weight.view(1, -1, 1) if self.weight.numel() > 1 else self.weight.view(())
        return (y * scale).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"across_spatial={self.across_spatial}, eps={self.eps}"


class CaffePriorBox(nn.Module):
    """SSD's PriorBox: the ``(1, 2, H*W*P*4)`` boxes and variances of a feature map's cells, the H and W
    read from the first input at run time. As Caffe's ``PriorBoxLayer::Forward``, the image size is the
    image input's H x W unless img_size fixed it (``img_from_input``), and the steps are image over
    feature size unless step fixed them (``step_derived``); ``img``/``step`` are the values at the size
    the net was read at (used when fixed)."""

    def __init__(self, min_sizes: list[int], max_sizes: list[int], aspect_ratios: list[float], clip: bool,
                 variance: list[float], img: list[int], step: list[float], offset: float,
                 offsets: list[list[float]] | None = None, img_from_input: bool = False,
                 step_derived: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.variance = list(variance)
        self.img = list(img)
        self.step = list(step)
        self.offset = offset
        self.img_from_input, self.step_derived = img_from_input, step_derived
        #: (offset_h, offset_w) box centres of a cell (TextBoxes' repeated offsets, else offset twice)
        self.offsets = [[float(h), float(w)] for h, w in offsets] if offsets else [[float(offset)] * 2]
        _f32 = self.round_float32
        sizes: list[tuple[float, float]] = []
        for s, m in enumerate(min_sizes):  # Caffe's order: min square, sqrt(min*max) square, ratios
            sizes.append((float(m), float(m)))
            if max_sizes:
                side = _f32(math.sqrt(m * max_sizes[s]))
                sizes.append((side, side))
            for ar in aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = _f32(math.sqrt(ar))
                sizes.append((_f32(m * root), _f32(m / root)))
        self.sizes = [[bw, bh] for bw, bh in sizes]  # lists: TorchScript's torch.tensor takes no tuples

    @staticmethod
    def round_float32(v: float) -> float:
        """``v`` rounded to float32 (to nearest even) in plain Python: the module is built on the meta
        device, where tensors hold no values."""
        mantissa, exponent = math.frexp(v)
        return math.ldexp(round(mantissa * 2 ** 24) / 2 ** 24, exponent)

    def table(self, rows: List[List[float]], dtype: torch.dtype) -> torch.Tensor:
        """``rows`` as a tensor; under ``torch.jit.trace`` built from scalars, which the trace records as
        ops (``torch.tensor`` would give a TracerWarning per call for what is a constant)."""
        if torch.jit.is_tracing():
            return torch.stack([torch.stack([torch.scalar_tensor(v, dtype=dtype) for v in row]) for row in rows])
        return torch.tensor(rows, dtype=dtype)

    def forward(self, x: torch.Tensor, image: Optional[torch.Tensor] = None) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]  # symbolic under FX and jit.trace: no size is computed in Python
        if self.img_from_input and image is not None:
            img_h, img_w = image.shape[2], image.shape[3]
        else:
            img_h, img_w = self.img[0], self.img[1]
        if self.step_derived:  # a float quotient rounded to float32 when it meets the float32 positions
            step_h, step_w = img_h / h, img_w / w
        else:
            step_h, step_w = self.step[0], self.step[1]
        f32, f64 = torch.float32, torch.float64
        offs = self.table(self.offsets, f32)                                                   # (J, 2)
        cx = ((torch.arange(w, dtype=f32).view(-1, 1) + offs[:, 1].view(1, -1)) * step_w).to(f64)  # (W, J)
        cy = ((torch.arange(h, dtype=f32).view(-1, 1) + offs[:, 0].view(1, -1)) * step_h).to(f64)  # (H, J)
        sizes = self.table(self.sizes, f64)
        bw, bh = sizes[:, 0].view(-1, 1), sizes[:, 1].view(-1, 1)
        cxg = cx.view(1, w, 1, -1).expand(h, w, len(self.sizes), len(self.offsets))
        cyg = cy.view(h, 1, 1, -1).expand(h, w, len(self.sizes), len(self.offsets))
        boxes = torch.stack([(cxg - bw / 2) / img_w, (cyg - bh / 2) / img_h,
                             (cxg + bw / 2) / img_w, (cyg + bh / 2) / img_h], dim=-1).to(f32).reshape(-1)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        var = self.table([self.variance if len(self.variance) == 4 else self.variance * 4], f32).view(-1)
        variances = (torch.ones_like(boxes).view(-1, 4) * var).reshape(-1)
        return torch.stack([boxes, variances]).unsqueeze(0).to(x.dtype)

    def extra_repr(self) -> str:
        return f"priors_per_cell={len(self.sizes)}, img={self.img}, step={self.step}, clip={self.clip}"


class CaffeDetectionOutput(nn.Module):
    """SSD's DetectionOutput (decode, per-class greedy NMS with ``eta``, ``keep_top_k``): rows
    ``[image, label, score, xmin, ymin, xmax, ymax]`` of shape ``(1, 1, rows, 7)``."""

    def __init__(self, num_classes: int, share_location: bool = True, background_label_id: int = 0,
                 nms_threshold: float = 0.3, top_k: int = -1, eta: float = 1.0, keep_top_k: int = -1,
                 confidence_threshold: float = -3.4028234663852886e38, code_type: str = "corner",
                 variance_encoded_in_target: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.share_location = share_location
        self.background_label_id = background_label_id
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.eta = eta
        self.keep_top_k = keep_top_k
        self.confidence_threshold = confidence_threshold
        self.code_type = code_type
        self.variance_encoded_in_target = variance_encoded_in_target

    def decode(self, loc: torch.Tensor, prior: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        if self.variance_encoded_in_target:
            var = torch.ones_like(var)
        if self.code_type == "corner":
            return prior + var * loc
        pw = prior[:, 2] - prior[:, 0]
        ph = prior[:, 3] - prior[:, 1]
        if self.code_type == "center_size":
            pcx = (prior[:, 0] + prior[:, 2]) / 2
            pcy = (prior[:, 1] + prior[:, 3]) / 2
            cx = var[:, 0] * loc[:, 0] * pw + pcx
            cy = var[:, 1] * loc[:, 1] * ph + pcy
            bw = torch.exp(var[:, 2] * loc[:, 2]) * pw
            bh = torch.exp(var[:, 3] * loc[:, 3]) * ph
            return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
        return prior + torch.stack([var[:, 0] * loc[:, 0] * pw, var[:, 1] * loc[:, 1] * ph,
                                    var[:, 2] * loc[:, 2] * pw, var[:, 3] * loc[:, 3] * ph], dim=1)

    @staticmethod
    def overlaps(boxes: torch.Tensor) -> torch.Tensor:
        """Caffe's JaccardOverlap between every pair of ``boxes`` (K, 4)."""
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        size = torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)
        iw = torch.minimum(boxes[:, None, 2], boxes[None, :, 2]) - torch.maximum(boxes[:, None, 0], boxes[None, :, 0])
        ih = torch.minimum(boxes[:, None, 3], boxes[None, :, 3]) - torch.maximum(boxes[:, None, 1], boxes[None, :, 1])
        inter = iw * ih
        iou = inter / (size[:, None] + size[None, :] - inter)
        return torch.where((iw > 0) & (ih > 0), iou, torch.zeros_like(iou))

    def nms(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[int]:
        thr = torch.tensor(self.confidence_threshold, dtype=scores.dtype)
        cand = torch.nonzero(scores > thr).flatten()
        order = torch.sort(scores[cand], descending=True, stable=True).indices
        cand = cand[order]
        if self.top_k > -1:
            cand = cand[:self.top_k]
        iou = self.overlaps(boxes[cand]).tolist()
        threshold = torch.tensor(self.nms_threshold, dtype=torch.float32)
        eta = torch.tensor(self.eta, dtype=torch.float32)
        kept: list[int] = []
        limit = threshold.item()
        for i in range(len(cand)):
            if all(iou[i][k] <= limit for k in kept):
                kept.append(i)
                if self.eta < 1 and limit > 0.5:
                    threshold = threshold * eta
                    limit = threshold.item()
        return [int(cand[i]) for i in kept]

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        n = int(loc.shape[0])
        num_priors = int(prior.shape[2]) // 4
        classes = self.num_classes
        loc_classes = 1 if self.share_location else classes
        loc = loc.reshape(n, num_priors, loc_classes, 4)
        conf = conf.reshape(n, num_priors, classes)
        pbox = prior[0, 0].reshape(num_priors, 4)
        pvar = prior[0, 1].reshape(num_priors, 4)
        rows: list[torch.Tensor] = []
        for i in range(n):
            decoded: dict[int, torch.Tensor] = {}
            found: dict[int, list[int]] = {}
            for c in range(classes):
                if c == self.background_label_id:
                    continue
                lc = 0 if self.share_location else c
                if lc not in decoded:
                    decoded[lc] = self.decode(loc[i, :, lc], pbox, pvar)
                found[c] = self.nms(decoded[lc], conf[i, :, c])
            if self.keep_top_k > -1 and sum(len(v) for v in found.values()) > self.keep_top_k:
                pairs = [(c, j) for c in sorted(found) for j in found[c]]
                scores = torch.stack([conf[i, j, c] for c, j in pairs])
                best = torch.sort(scores, descending=True, stable=True).indices[:self.keep_top_k].tolist()
                chosen = {pairs[b] for b in best}
                found = {c: [j for j in js if (c, j) in chosen] for c, js in found.items()}
            for c in sorted(found):
                if not found[c]:
                    continue
                idx = torch.tensor(found[c], dtype=torch.long)
                boxes = decoded[0 if self.share_location else c][idx]
                head = torch.tensor([[float(i), float(c)]], dtype=loc.dtype).expand(len(idx), 2)
                rows.append(torch.cat([head, conf[i, idx, c].unsqueeze(1), boxes], dim=1))
        if not rows:
            fake = torch.full((n, 7), -1.0, dtype=loc.dtype)
            fake[:, 0] = torch.arange(n, dtype=loc.dtype)
            rows = [fake]
        return torch.cat(rows).reshape(1, 1, -1, 7)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, code_type={self.code_type!r}, nms_threshold={self.nms_threshold}, "
                f"top_k={self.top_k}, eta={self.eta}, keep_top_k={self.keep_top_k}")


@builder("Normalize")
def _normalize(node: Node, graph: Graph) -> LayerSpec:
    a = node.attrs
    return LayerSpec(CaffeNormalize, {"channels": int(graph.param(node, "weight").size),
                                      "across_spatial": bool(a["across_spatial"]),
                                      "channel_shared": bool(a["channel_shared"]), "eps": float(a["eps"])},
                     _tensors(node, graph))


@builder("PriorBox")
def _prior_box(node: Node, graph: Graph) -> LayerSpec:
    keys = ("min_sizes", "max_sizes", "aspect_ratios", "clip", "variance", "img", "step", "offset")
    kwargs = {k: node.attrs[k] for k in keys}
    if node.attrs.get("offsets"):
        kwargs["offsets"] = node.attrs["offsets"]
    if prior_follows_input(node.attrs) and len(node.inputs) > 1:  # Caffe recomputes these at run time
        kwargs["img_from_input"] = True
        kwargs["step_derived"] = node.attrs["rule"]["step"] == "derived"
    return LayerSpec(CaffePriorBox, kwargs)


@builder("DetectionOutput")
def _detection_output(node: Node, graph: Graph) -> LayerSpec:
    kwargs: dict[str, Any] = dict(node.attrs)
    return LayerSpec(CaffeDetectionOutput, kwargs)


HELPER_CLASSES = (CaffeNormalize, CaffePriorBox, CaffeDetectionOutput)
