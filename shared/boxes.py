"""Box geometry for evaluation, augmentation and the detector's box regression.

Box convention, stated once for the whole project: a box is ``[x1, y1, x2, y2]`` in float pixels,
pixel-edge coordinates (0 = left/top edge of column/row 0), x2/y2 exclusive, so a box covering columns
0..9 is ``x1 = 0, x2 = 10`` and its area is ``(x2 - x1) * (y2 - y1)`` with no ``+ 1`` (torchvision's
convention, and the manifest's). The PASCAL VOC devkit adds ``+ 1`` to widths because its boxes hold 1-based
inclusive pixel indices; converted as ``x1 = xmin - 1, x2 = xmax``, a devkit box has the same width here, so
IoUs (and AP) agree with the devkit's.

What torchvision already does is used, not rewritten: :func:`iou_matrix` wraps ``torchvision.ops.box_iou``
(numpy float64 for evaluation); :func:`encode_boxes` / :func:`decode_boxes` wrap the ``BoxCoder`` that
torchvision's ``RoIHeads`` uses, so the targets a detector is trained on and the boxes it decodes cannot drift
from torchvision's Fast R-CNN head (``_utils`` is a private module: torchvision is pinned, and the tests check
the coder against the formula in float64). The detector calls ``torchvision.ops.nms``, ``batched_nms`` and
``remove_small_boxes`` directly. :func:`clip_boxes`, :func:`flip_boxes` and :func:`scale_boxes` accept numpy
arrays and torch tensors alike (one implementation for both: fancy indexing copies in numpy and torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou

__all__ = [
    "BBOX_XFORM_CLIP",
    "DEFAULT_BOX_CODER_WEIGHTS",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "flip_boxes",
    "iou_matrix",
    "scale_boxes",
]

DEFAULT_BOX_CODER_WEIGHTS: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
"""``(wx, wy, ww, wh)``: torchvision ``RoIHeads``' default ``bbox_reg_weights``. Dividing targets by the stds
``(0.1, 0.1, 0.2, 0.2)`` with zero means, as py-faster-rcnn's ``BBOX_NORMALIZE_TARGETS_PRECOMPUTED`` does, is the
same scaling, so these reproduce the paper's Fast R-CNN targets."""

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
"""Largest ``dw``, ``dh`` (after dividing by the weights) that :func:`decode_boxes` exponentiates: a box grows at
most 62.5x per side, torchvision's ``BoxCoder`` default."""

Boxes = TypeVar("Boxes", np.ndarray, torch.Tensor)


def _check_boxes(boxes: np.ndarray | torch.Tensor, name: str, *, flat: bool = False) -> None:
    """Raise unless ``boxes`` is a floating (..., 4) array, or (N, 4) when ``flat``."""
    shape_ok = boxes.ndim == 2 if flat else boxes.ndim >= 1
    if not shape_ok or boxes.shape[-1] != 4:
        expected = "(N, 4)" if flat else "(..., 4)"
        raise ValueError(f"{name} must have shape {expected} as [x1, y1, x2, y2], got shape {tuple(boxes.shape)}")
    floating = boxes.is_floating_point() if isinstance(boxes, torch.Tensor) else np.issubdtype(boxes.dtype, np.floating)
    if not floating:
        raise TypeError(f"{name} must be a floating-point array (pixels), got dtype {boxes.dtype}")


def iou_matrix(boxes1: ArrayLike, boxes2: ArrayLike) -> np.ndarray:
    """Intersection over union of every pair of boxes, in float64 (the evaluation's precision).

    Args:
        boxes1: (N, 4) boxes, any real dtype (converted to float64).
        boxes2: (M, 4) boxes.

    Returns:
        (N, M) float64 array; entry ``[i, j]`` is IoU(boxes1[i], boxes2[j]) in [0, 1]. N or M may be 0.
        Two empty (zero-area) boxes give NaN, as in ``torchvision.ops.box_iou``.

    Raises:
        ValueError: an input is not of shape (N, 4).
    """
    a = np.ascontiguousarray(boxes1, dtype=np.float64)
    b = np.ascontiguousarray(boxes2, dtype=np.float64)
    _check_boxes(a, "boxes1", flat=True)
    _check_boxes(b, "boxes2", flat=True)
    return box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _box_coder(weights: Sequence[float]) -> BoxCoder:
    if len(weights) != 4 or not all(math.isfinite(w) and w > 0 for w in weights):
        raise ValueError(f"weights must be 4 positive finite numbers (wx, wy, ww, wh), got {tuple(weights)}")
    wx, wy, ww, wh = (float(w) for w in weights)
    return BoxCoder((wx, wy, ww, wh), bbox_xform_clip=BBOX_XFORM_CLIP)


def encode_boxes(
    proposals: torch.Tensor, gt: torch.Tensor, weights: Sequence[float] = DEFAULT_BOX_CODER_WEIGHTS
) -> torch.Tensor:
    """Fast R-CNN regression targets that move each proposal onto its ground-truth box.

    R-CNN parameterisation with torchvision's weights: with centres ``(px, py)``, sizes ``(pw, ph)`` of a
    proposal and ``(gx, gy)``, ``(gw, gh)`` of its box, ``dx = wx (gx - px) / pw``, ``dy = wy (gy - py) / ph``,
    ``dw = ww log(gw / pw)``, ``dh = wh log(gh / ph)``; ``pw = x2 - x1`` (no ``+ 1``). This is
    ``torchvision.models.detection._utils.BoxCoder.encode_single``, what ``RoIHeads`` trains on.

    Args:
        proposals: (R, 4) float proposals; widths and heights must be positive (else inf/NaN).
        gt: (R, 4) float ground-truth box matched to each proposal; positive widths and heights.
        weights: ``(wx, wy, ww, wh)``; pass the detector's ``bbox_reg_weights``.

    Returns:
        (R, 4) deltas ``(dx, dy, dw, dh)``, dtype of ``gt``.

    Raises:
        ValueError: shapes not (R, 4) or different, or weights not 4 positive numbers.
        TypeError: boxes not floating point.
    """
    _check_boxes(proposals, "proposals", flat=True)
    _check_boxes(gt, "gt", flat=True)
    if proposals.shape != gt.shape:
        raise ValueError(
            f"proposals and gt must have the same shape (R, 4), got {tuple(proposals.shape)} and {tuple(gt.shape)}"
        )
    return _box_coder(weights).encode_single(gt, proposals)


def decode_boxes(
    proposals: torch.Tensor,
    deltas: torch.Tensor,
    weights: Sequence[float] = DEFAULT_BOX_CODER_WEIGHTS,
    clip_to: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Apply regression deltas to proposals: the inverse of :func:`encode_boxes`.

    ``dw``, ``dh`` are clamped at :data:`BBOX_XFORM_CLIP` before ``exp`` (torchvision's ``BoxCoder``), so an
    extreme delta cannot overflow. Class-specific regression is supported: deltas of shape (R, 4K) give one box
    per class, ``out.view(R, K, 4)[r, k]`` being class k's box for proposal r.

    Args:
        proposals: (R, 4) float proposals with positive widths and heights.
        deltas: (R, 4K) float deltas ``(dx, dy, dw, dh)`` per class, K >= 1.
        weights: ``(wx, wy, ww, wh)`` used to encode them.
        clip_to: ``(height, width)`` of the image in pixels to clip the boxes to (see :func:`clip_boxes`),
            or ``None`` for no clipping.

    Returns:
        (R, 4K) boxes, dtype of ``deltas``.

    Raises:
        ValueError: proposals not (R, 4), deltas not (R, 4K), or bad weights.
        TypeError: inputs not floating point.
    """
    _check_boxes(proposals, "proposals", flat=True)
    if deltas.ndim != 2 or deltas.shape[0] != proposals.shape[0] or deltas.shape[1] == 0 or deltas.shape[1] % 4:
        raise ValueError(
            f"deltas must have shape (R, 4K) with R = {proposals.shape[0]} proposals and K >= 1, "
            f"got shape {tuple(deltas.shape)}"
        )
    if not deltas.is_floating_point():
        raise TypeError(f"deltas must be floating point, got dtype {deltas.dtype}")
    boxes = _box_coder(weights).decode_single(deltas, proposals)
    if clip_to is not None:
        boxes = clip_boxes(boxes.view(boxes.shape[0], -1, 4), clip_to).view(boxes.shape)
    return boxes


def clip_boxes(boxes: Boxes, size: tuple[int, int]) -> Boxes:
    """Clip boxes to an image: x into ``[0, width]``, y into ``[0, height]`` (edges, so x2 may equal width).

    Same result as ``torchvision.ops.clip_boxes_to_image`` for tensors, and works on numpy arrays too. A box
    entirely outside the image becomes empty (zero width or height); drop those with
    ``torchvision.ops.remove_small_boxes``.

    Args:
        boxes: (..., 4) float boxes, numpy or torch.
        size: ``(height, width)`` of the image in pixels.

    Returns:
        A new array of the same type, shape and dtype.

    Raises:
        ValueError: last dimension not 4.
        TypeError: boxes not floating point.
    """
    _check_boxes(boxes, "boxes")
    height, width = size
    out = boxes[..., [0, 1, 2, 3]]
    out[..., 0::2] = out[..., 0::2].clip(0, width)
    out[..., 1::2] = out[..., 1::2].clip(0, height)
    return out


def flip_boxes(boxes: Boxes, width: float) -> Boxes:
    """Mirror boxes left-right in an image of the given width: ``x1' = width - x2``, ``x2' = width - x1``.

    In pixel-edge coordinates the mirror of edge x is ``width - x``, so flipping twice is the identity and
    ``[0, 0, 10, 5]`` in a 100-pixel-wide image becomes ``[90, 0, 100, 5]``.

    Args:
        boxes: (..., 4) float boxes, numpy or torch.
        width: image width in pixels.

    Returns:
        A new array of the same type, shape and dtype.

    Raises:
        ValueError: last dimension not 4.
        TypeError: boxes not floating point.
    """
    _check_boxes(boxes, "boxes")
    out = boxes[..., [2, 1, 0, 3]]
    out[..., 0::2] = width - out[..., 0::2]
    return out


def scale_boxes(boxes: Boxes, scale: float | tuple[float, float]) -> Boxes:
    """Map boxes through an image resize: every edge coordinate times the scale factor.

    Exact in pixel-edge coordinates: resizing an image by ``s`` moves edge x to ``s * x``. For a resize from
    ``(h, w)`` to ``(h', w')`` pass ``(w' / w, h' / h)``.

    Args:
        boxes: (..., 4) float boxes, numpy or torch.
        scale: one factor for both axes, or ``(sx, sy)``.

    Returns:
        A new array of the same type, shape and dtype.

    Raises:
        ValueError: last dimension not 4, or scale not a positive finite factor or pair of them.
        TypeError: boxes not floating point.
    """
    _check_boxes(boxes, "boxes")
    factors = (scale, scale) if np.ndim(scale) == 0 else tuple(scale)
    if len(factors) != 2 or not all(math.isfinite(f) and f > 0 for f in factors):
        raise ValueError(f"scale must be one positive finite factor or (sx, sy), got {scale!r}")
    sx, sy = (float(f) for f in factors)
    out = boxes[..., [0, 1, 2, 3]]
    out[..., 0::2] = out[..., 0::2] * sx
    out[..., 1::2] = out[..., 1::2] * sy
    return out
