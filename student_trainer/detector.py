"""Fast R-CNN on an AlexNet-style trunk: RoI pooling over external proposals, fc6/fc7, classifier, box regression.

The model (Girshick, ICCV 2015, as used downstream by Gupta et al.): the trunk's conv5 map (stride
``trunk.conv5_stride``) -> RoI max pooling to 6x6 (``torchvision.ops.RoIPool``, ``spatial_scale = 1 / stride``)
-> fc6, fc7 (ReLU + dropout) -> ``cls_score`` (K + 1 logits, index 0 = background) and ``bbox_pred``
(class-specific deltas, 4 (K + 1)). Labels inside this module follow torchvision: 0 is background, class k of the
manifest's list is k + 1; :func:`postprocess_detections` returns 0-based class indices (the evaluator's).

Training RoIs (:func:`sample_rois`) are torchvision ``RoIHeads.select_training_samples`` without its class:
ground-truth boxes are appended to the proposals, each RoI is matched to its best box (``Matcher``; IoU >= 0.5
is foreground, IoU in [0, 0.5) background, nothing ignored), then ``BalancedPositiveNegativeSampler`` keeps
``rois_per_image`` (128) RoIs with at most ``fg_fraction`` (25 %) foreground. Regression targets use
:func:`shared.boxes.encode_boxes` with weights (10, 10, 5, 5), which plays the role of Fast R-CNN's target
normalisation (its targets were divided by std (0.1, 0.1, 0.2, 0.2)).

Loss (:func:`fast_rcnn_loss`): cross-entropy over the sampled RoIs plus smooth-L1 on the foreground RoIs'
class-specific deltas, **beta = 1** as in Fast R-CNN (torchvision uses beta = 1/9, inherited from
maskrcnn-benchmark), summed and divided by the number of sampled RoIs (both Fast R-CNN and torchvision
normalise that way), weight 1. ``beta`` is a parameter (``--box-loss-beta``) so the torchvision choice can be
reproduced; every init of one comparison must use the same value.

Detections (:func:`postprocess_detections`): softmax scores, deltas decoded onto the proposals and clipped to
the image, background dropped, score > ``score_thresh`` (1e-3 by default: torchvision's 0.05 truncates the PR
curve and lowers AP), empty boxes removed, per-class NMS at 0.3, the best 100 kept. It is a pure function of
(logits, deltas, proposals), so late fusion (:mod:`student_trainer.fusion`) can combine two detectors' raw
outputs on the same proposals and reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import RoIPool, batched_nms, box_iou, remove_small_boxes

from shared.boxes import DEFAULT_BOX_CODER_WEIGHTS, decode_boxes, encode_boxes
from shared.nets.trunks import AlexNetTrunk

__all__ = [
    "FastRCNN",
    "RoISample",
    "fast_rcnn_loss",
    "postprocess_detections",
    "sample_rois",
]


class FastRCNN(nn.Module):
    """Trunk conv1..conv5 + RoI pooling + fc6/fc7 + classifier and class-specific box regression.

    ``forward(images, rois)`` scores given RoIs; sampling, the loss and post-processing are the module's
    functions, so training, evaluation and fusion share them. State-dict keys of the trunk are ``trunk.*``, so a
    detector checkpoint serves as a teacher (:func:`shared.nets.teachers.load_teacher` ``("checkpoint", path)``).

    Args:
        trunk: the AlexNet-style trunk (its ``conv5_features`` feed RoI pooling).
        num_classes: K object classes (without background).
        fc_width: width of fc6 and fc7 (4096 in the paper).
        dropout: dropout probability after fc6 and fc7 (0.5 in the paper).
        roi_size: RoI pooling output side (6 for AlexNet's fc6).
    """

    def __init__(
        self, trunk: AlexNetTrunk, num_classes: int, fc_width: int = 4096, dropout: float = 0.5, roi_size: int = 6
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (object classes, without background), got {num_classes}")
        self.trunk = trunk
        self.num_classes, self.fc_width, self.dropout, self.roi_size = num_classes, fc_width, dropout, roi_size
        self.roi_pool = RoIPool((roi_size, roi_size), spatial_scale=1.0 / trunk.conv5_stride)
        self.fc6 = nn.Sequential(
            nn.Linear(trunk.out_channels * roi_size * roi_size, fc_width), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.fc7 = nn.Sequential(nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.cls_score = nn.Linear(fc_width, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_width, 4 * (num_classes + 1))
        # Fast R-CNN's initialisation of the new layers (fc6/fc7 keep PyTorch's default, scaled to their width).
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.trunk_frozen = False

    def describe(self) -> dict[str, Any]:
        """The ``detector`` entry of a checkpoint: enough (with the ``trunk`` entry) to rebuild this model."""
        return {"num_classes": self.num_classes, "fc_width": self.fc_width, "dropout": self.dropout,
                "roi_size": self.roi_size}

    def freeze_trunk(self) -> None:
        """Train only the fc layers: trunk parameters get no gradient and BatchNorm statistics stay as loaded."""
        self.trunk_frozen = True
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.trunk.eval()

    def train(self, mode: bool = True) -> FastRCNN:
        super().train(mode)
        if self.trunk_frozen:
            self.trunk.eval()  # BatchNorm in train mode would update running statistics even without gradients
        return self

    def forward(self, images: torch.Tensor, rois: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Score RoIs.

        Args:
            images: (B, 3, H, W) normalised input (see :mod:`student_trainer.detect_data`).
            rois: B tensors (R_b, 4) of boxes in input pixels (``[x1, y1, x2, y2]``, :mod:`shared.boxes`).

        Returns:
            logits (R, K + 1) and deltas (R, 4 (K + 1)) for the R = sum R_b RoIs, in image-then-RoI order.
        """
        if len(rois) != images.shape[0]:
            raise ValueError(f"need one RoI tensor per image: {images.shape[0]} images, {len(rois)} RoI tensors")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.trunk_frozen):
            features = self.trunk.conv5_features(images)
        if features.device.type == "cpu" and features.dtype not in (torch.float32, torch.float64):
            features = features.float()  # torchvision's CPU RoI pooling has no bfloat16 kernel (CUDA autocasts it)
        pooled = self.roi_pool(features, [r.to(features.dtype) for r in rois])
        x = self.fc7(self.fc6(pooled.flatten(1)))
        return self.cls_score(x), self.bbox_pred(x)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes} (+ background), fc_width={self.fc_width}, dropout={self.dropout}, "
                f"roi={self.roi_size}x{self.roi_size} at stride {self.trunk.conv5_stride}, "
                f"trunk_frozen={self.trunk_frozen}")


class RoISample(NamedTuple):
    """Training RoIs of a batch (see :func:`sample_rois`)."""

    rois: list[torch.Tensor]
    labels: torch.Tensor
    targets: torch.Tensor


def sample_rois(
    proposals: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    rois_per_image: int = 128,
    fg_fraction: float = 0.25,
    fg_iou: float = 0.5,
    box_weights: Sequence[float] = DEFAULT_BOX_CODER_WEIGHTS,
) -> RoISample:
    """Training RoIs of a batch: ground truth appended to the proposals, matched, sampled.

    Uses the global torch RNG (``randperm``), so a resumed run restores the RNG state to repeat it exactly.

    Args:
        proposals: per image (N_b, 4) float boxes in input pixels.
        gt_boxes: per image (M_b, 4) ground-truth boxes (M_b may be 0: all RoIs are background).
        gt_labels: per image (M_b,) int64 labels, 1..K (0 is background).
        rois_per_image: RoIs kept per image (fewer when the image has fewer candidates).
        fg_fraction: most foreground RoIs per image, as a fraction of ``rois_per_image``.
        fg_iou: IoU with a ground-truth box that makes a RoI foreground; below it, background.
        box_weights: box-coder weights of the regression targets.

    Returns:
        rois: per image (S_b, 4); labels: (S,) int64 (0 background); targets: (S, 4) deltas to the matched
        box (meaningful for foreground RoIs only), with S = sum S_b in image-then-RoI order.
    """
    matcher = Matcher(fg_iou, fg_iou, allow_low_quality_matches=False)
    sampler = BalancedPositiveNegativeSampler(rois_per_image, fg_fraction)
    matched_boxes, labels, candidates = [], [], []
    for props, boxes, labs in zip(proposals, gt_boxes, gt_labels, strict=True):
        props = torch.cat([props, boxes.to(props.dtype)])
        if boxes.numel():
            idx = matcher(box_iou(boxes.to(props.dtype), props))
            lab = labs[idx.clamp(min=0)].to(torch.int64)
            lab[idx < 0] = 0
            matched_boxes.append(boxes.to(props.dtype)[idx.clamp(min=0)])
        else:
            lab = torch.zeros(len(props), dtype=torch.int64, device=props.device)
            matched_boxes.append(props.clone())  # targets of background RoIs are never used
        labels.append(lab)
        candidates.append(props)
    pos, neg = sampler(labels)
    rois, out_labels, targets = [], [], []
    for props, lab, gt, p, n in zip(candidates, labels, matched_boxes, pos, neg, strict=True):
        keep = torch.where((p | n).bool())[0]
        rois.append(props[keep])
        out_labels.append(lab[keep])
        targets.append(encode_boxes(props[keep], gt[keep], box_weights))
    return RoISample(rois, torch.cat(out_labels), torch.cat(targets))


def fast_rcnn_loss(
    logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast R-CNN's multi-task loss (see the module docstring), computed in float32.

    Args:
        logits: (S, K + 1); deltas: (S, 4 (K + 1)); labels: (S,) 0..K; targets: (S, 4).
        beta: smooth-L1 transition point (1 in Fast R-CNN, 1/9 in torchvision).

    Returns:
        (classification loss, box loss), scalars.
    """
    logits, deltas = logits.float(), deltas.float()
    loss_cls = F.cross_entropy(logits, labels)
    fg = torch.where(labels > 0)[0]
    per_class = deltas.view(deltas.shape[0], -1, 4)[fg, labels[fg]]
    loss_box = F.smooth_l1_loss(per_class, targets[fg].float(), beta=beta, reduction="sum") / max(1, labels.numel())
    return loss_cls, loss_box


def postprocess_detections(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    proposals: torch.Tensor,
    image_size: tuple[int, int],
    score_thresh: float = 1e-3,
    nms_thresh: float = 0.3,
    max_detections: int = 100,
    box_weights: Sequence[float] = DEFAULT_BOX_CODER_WEIGHTS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections of one image from its RoIs' raw outputs (torchvision ``RoIHeads.postprocess_detections``).

    Deltas are relative to the box size, so the same outputs decode onto proposals in any image scale: pass
    proposals and ``image_size`` in the frame's original pixels to get boxes there.

    Args:
        logits: (R, K + 1) class logits; deltas: (R, 4 (K + 1)); proposals: (R, 4) the scored RoIs.
        image_size: (height, width) to clip boxes to, pixels.
        score_thresh: keep class scores above this (after softmax).
        nms_thresh: per-class NMS IoU.
        max_detections: best detections kept (over all classes).
        box_weights: box-coder weights the deltas were trained with.

    Returns:
        boxes (D, 4) float32, scores (D,) float32, labels (D,) int64 0-based class indices (background removed),
        sorted by descending score.
    """
    logits, deltas, proposals = logits.float(), deltas.float(), proposals.float()
    num = logits.shape[1]
    if deltas.shape != (logits.shape[0], 4 * num) or proposals.shape != (logits.shape[0], 4):
        raise ValueError(f"expected logits (R, K+1), deltas (R, 4(K+1)), proposals (R, 4); got "
                         f"{tuple(logits.shape)}, {tuple(deltas.shape)}, {tuple(proposals.shape)}")
    scores = F.softmax(logits, dim=1)[:, 1:].reshape(-1)
    boxes = decode_boxes(proposals, deltas, box_weights, clip_to=image_size).view(-1, num, 4)[:, 1:].reshape(-1, 4)
    labels = torch.arange(num - 1, device=logits.device).repeat(logits.shape[0])
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, min_size=1e-2)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]  # sorted by score
    return boxes[keep], scores[keep], labels[keep]
