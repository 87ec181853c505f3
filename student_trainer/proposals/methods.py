"""Proposal methods: which sources (:mod:`.sources`) a method runs and how their ranked lists are fused.

* ``"hybrid"`` (default): selective search and Edge Boxes interleaved (1st of selective search, 1st of Edge
  Boxes, 2nd, ...), dropping a box that overlaps an earlier one at IoU > :data:`DUPLICATE_IOU`. Selective
  search contributes a few hundred well-localised, modality-aware boxes; Edge Boxes fills the rest of the
  budget in objectness order. Score = the fused rank, ``1 - rank / N``.
* ``"edge_boxes"``, ``"selective_search"``: one source alone, with its own scores.

Measured with ``python -m bench.proposals`` on the synth quick profile's test splits (96x128, 250 frames
each), recall at IoU 0.5 of the top 500 / 2000 and CPU seconds per frame on one core:

==================  ==================================  ==================================
method              depth_test                          flow_test
==================  ==================================  ==================================
hybrid              0.984 / 0.992, 0.26 s               0.977 / 0.989, 0.24 s
edge_boxes          0.941 / 0.978, 0.09 s               0.937 / 0.971, 0.08 s
selective_search    0.973 / 0.973, 0.13 s (399 boxes)   0.958 / 0.958, 0.12 s (200 boxes)
==================  ==================================  ==================================

On a 425x560 NYUD2 frame: Edge Boxes 1.5 s, selective search 1.0 s (downsampled to 320 px) of CPU.

A method is split in two so that worker processes never import torch (importing torchvision costs ~4 s of CPU
in each spawned worker, measured here): :func:`candidates` runs the sources (the expensive, torch-free part)
and :func:`combine` fuses their lists with ``torchvision.ops.nms`` (milliseconds, in the parent process).
:func:`propose` does both. Same input, same output: the sources are deterministic and so is the fusion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from student_trainer.proposals.sources import ProposalInputs, edge_boxes, selective_search

__all__ = ["DUPLICATE_IOU", "METHODS", "SOURCES", "Ranked", "candidates", "combine", "propose"]

DUPLICATE_IOU = 0.9
"""Two proposals overlapping more than this are one: the lower-ranked is dropped."""


def _drop_duplicates(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes to keep, in order: a box overlapping an earlier kept one at more than ``iou`` goes."""
    import torch  # here, not at the top: worker processes run only the sources and must not pay for torch
    from torchvision.ops import nms

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    rank = torch.arange(len(boxes), 0, -1, dtype=torch.float64)  # strictly decreasing: nms keeps our order
    keep = nms(torch.from_numpy(boxes.astype(np.float64)), rank, iou)
    return np.sort(keep.numpy())


Ranked = tuple[np.ndarray, np.ndarray]
"""(boxes (N, 4) float32, scores (N,) float32) in descending score order."""

SOURCES: dict[str, Callable[[ProposalInputs, int], Ranked]] = {
    "edge_boxes": edge_boxes,
    "selective_search": selective_search,
}

METHODS: dict[str, tuple[str, ...]] = {
    "hybrid": ("selective_search", "edge_boxes"),
    "edge_boxes": ("edge_boxes",),
    "selective_search": ("selective_search",),
}
"""Method name -> the sources it fuses (see the module docstring); :func:`propose` looks names up here."""


def _check(method: str, max_boxes: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown proposal method {method!r}: expected one of {', '.join(map(repr, METHODS))}")
    if max_boxes < 1:
        raise ValueError(f"max_boxes must be >= 1, got {max_boxes}")


def candidates(inputs: ProposalInputs, method: str = "hybrid", max_boxes: int = 2000) -> list[Ranked]:
    """The ranked lists of a method's sources (the expensive part; needs no torch).

    Raises:
        ValueError: unknown method or ``max_boxes`` < 1.
        RuntimeError: OpenCV without contrib modules.
    """
    _check(method, max_boxes)
    return [SOURCES[name](inputs, max_boxes) for name in METHODS[method]]


def combine(lists: list[Ranked], max_boxes: int = 2000) -> Ranked:
    """Fuse ranked lists: one list passes through (cut to ``max_boxes``); several are interleaved (1st of
    each, then 2nd of each, ...) and a box overlapping an earlier one at IoU > :data:`DUPLICATE_IOU` is
    dropped (``torchvision.ops.nms``); the fused score is ``1 - rank / N``.
    """
    if len(lists) == 1:
        boxes, scores = lists[0]
        return boxes[:max_boxes], scores[:max_boxes]
    n = max([len(b) for b, _ in lists], default=0)
    slots = np.full((n, len(lists), 4), np.nan, np.float32)
    for j, (b, _) in enumerate(lists):
        slots[: len(b), j] = b
    merged = slots.reshape(-1, 4)
    merged = merged[~np.isnan(merged[:, 0])]
    boxes = merged[_drop_duplicates(merged, DUPLICATE_IOU)[:max_boxes]]
    return boxes, (1.0 - np.arange(len(boxes)) / max(len(boxes), 1)).astype(np.float32)


def propose(inputs: ProposalInputs, method: str = "hybrid", max_boxes: int = 2000) -> Ranked:
    """Proposals of one frame: :func:`combine` of :func:`candidates`.

    Args:
        inputs: the frame's RGB and paired-modality images.
        method: a key of :data:`METHODS`.
        max_boxes: at most this many boxes are returned (the best).

    Returns:
        (boxes (N, 4) float32, scores (N,) float32), N <= max_boxes, boxes ``[x1, y1, x2, y2]`` pixel edges
        (x2/y2 exclusive) inside the image, in descending score order.

    Raises:
        ValueError: unknown method or ``max_boxes`` < 1.
        RuntimeError: OpenCV without contrib modules.
    """
    return combine(candidates(inputs, method, max_boxes), max_boxes)
