"""py-faster-rcnn's proposal layer as an exact ``nn.Module`` (formulas: :mod:`caffe2x.layers.proposal`).

No torchvision: torchvision's ``nms`` uses areas without py-faster-rcnn's "+1" and is not guaranteed
to order equal scores stably, so the greedy loop is written here in float32, one kept box at a time
(each step suppresses the later boxes overlapping it by more than the threshold), stopping once
``post_nms_topn`` boxes are kept. The module uses only torch and math, so ``--emit-code`` carries it.
"""
from __future__ import annotations

import torch
from torch import nn

from caffe2x.graph.ir import Graph, Node
from caffe2x.targets.torch.ops import LayerSpec, builder


class CaffeProposal(nn.Module):
    """Faster R-CNN's RPN proposals: ``(cls_prob, bbox_pred, im_info)`` of one image -> rois (R, 5)
    ``[0, x1, y1, x2, y2]`` (and their scores (R, 1) with ``with_scores``)."""

    def __init__(self, feat_stride: int, anchors: list[list[float]], pre_nms_topn: int, post_nms_topn: int,
                 nms_thresh: float, min_size: float, with_scores: bool = False) -> None:
        super().__init__()
        self.feat_stride = int(feat_stride)
        self.anchors = [list(map(float, a)) for a in anchors]
        self.pre_nms_topn = int(pre_nms_topn)
        self.post_nms_topn = int(post_nms_topn)
        self.nms_thresh = float(nms_thresh)
        self.min_size = float(min_size)
        self.with_scores = bool(with_scores)

    def shifted_anchors(self, height: int, width: int) -> torch.Tensor:
        """Every cell's anchors in (h, w, anchor) order, summed in float64 then float32: (H*W*A, 4)."""
        f64 = torch.float64
        base = torch.tensor(self.anchors, dtype=f64)
        sx = (torch.arange(width, dtype=f64) * self.feat_stride).view(1, width).expand(height, width).reshape(-1)
        sy = (torch.arange(height, dtype=f64) * self.feat_stride).view(height, 1).expand(height, width).reshape(-1)
        shifts = torch.stack([sx, sy, sx, sy], dim=1)
        return (base.unsqueeze(0) + shifts.unsqueeze(1)).reshape(-1, 4).to(torch.float32)

    @staticmethod
    def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """py-faster-rcnn's ``bbox_transform_inv`` in float32."""
        widths = anchors[:, 2] - anchors[:, 0] + 1.0
        heights = anchors[:, 3] - anchors[:, 1] + 1.0
        ctr_x = anchors[:, 0] + 0.5 * widths
        ctr_y = anchors[:, 1] + 0.5 * heights
        px = deltas[:, 0] * widths + ctr_x
        py = deltas[:, 1] * heights + ctr_y
        pw = torch.exp(deltas[:, 2]) * widths
        ph = torch.exp(deltas[:, 3]) * heights
        return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], dim=1)

    def nms(self, boxes: torch.Tensor) -> list[int]:
        """Greedy NMS over boxes in score order, "+1" areas, suppression when ``iou > nms_thresh``."""
        x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
        thr = torch.tensor(self.nms_thresh, dtype=torch.float32)
        count = int(boxes.shape[0])
        suppressed = torch.zeros(count, dtype=torch.bool)
        positions = torch.arange(count)
        keep: list[int] = []
        for i in range(count):
            if bool(suppressed[i]):
                continue
            keep.append(i)
            if 0 < self.post_nms_topn <= len(keep):
                break
            w = torch.clamp(torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1) + 1.0, min=0.0)
            h = torch.clamp(torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1) + 1.0, min=0.0)
            inter = w * h
            iou = inter / (areas[i] + areas - inter)
            suppressed |= (positions > i) & (iou > thr)
        return keep

    def forward(self, scores: torch.Tensor, deltas: torch.Tensor, im_info: torch.Tensor):  # type: ignore[no-untyped-def]
        count = len(self.anchors)
        height, width = int(scores.shape[2]), int(scores.shape[3])
        fg = scores[0, count:].to(torch.float32).permute(1, 2, 0).reshape(-1)
        d = deltas[0].to(torch.float32).permute(1, 2, 0).reshape(-1, 4)
        info = im_info.reshape(-1).to(torch.float32)
        boxes = self.decode(self.shifted_anchors(height, width), d)
        zero = torch.zeros((), dtype=torch.float32)
        xs = torch.maximum(torch.minimum(boxes[:, 0::2], info[1] - 1.0), zero)
        ys = torch.maximum(torch.minimum(boxes[:, 1::2], info[0] - 1.0), zero)
        boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], dim=1)
        min_size = torch.tensor(self.min_size, dtype=torch.float32) * info[2]
        ws = boxes[:, 2] - boxes[:, 0] + 1.0
        hs = boxes[:, 3] - boxes[:, 1] + 1.0
        keep = torch.nonzero((ws >= min_size) & (hs >= min_size)).flatten()
        boxes, fg = boxes[keep], fg[keep]
        order = torch.sort(fg, descending=True, stable=True).indices
        if self.pre_nms_topn > 0:
            order = order[:self.pre_nms_topn]
        boxes, fg = boxes[order], fg[order]
        kept = torch.tensor(self.nms(boxes), dtype=torch.long)
        rois = torch.cat([torch.zeros((len(kept), 1), dtype=torch.float32), boxes[kept]], dim=1).to(scores.dtype)
        if self.with_scores:
            return rois, fg[kept].reshape(-1, 1).to(scores.dtype)
        return rois

    def extra_repr(self) -> str:
        return (f"feat_stride={self.feat_stride}, anchors={len(self.anchors)}, pre_nms_topn={self.pre_nms_topn}, "
                f"post_nms_topn={self.post_nms_topn}, nms_thresh={self.nms_thresh}, min_size={self.min_size}")


@builder("Proposal")
def _proposal(node: Node, graph: Graph) -> LayerSpec:
    keys = ("feat_stride", "anchors", "pre_nms_topn", "post_nms_topn", "nms_thresh", "min_size", "with_scores")
    return LayerSpec(CaffeProposal, {k: node.attrs[k] for k in keys})
