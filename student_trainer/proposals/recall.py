"""Proposal recall: the fraction of ground-truth objects that some top-k proposal covers at IoU >= a threshold."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from shared.errors import DataError
from shared.manifest import Manifest, read_manifest

__all__ = ["proposal_recall"]


def proposal_recall(
    proposals: Mapping[str, np.ndarray],
    manifest: Manifest | str | os.PathLike[str],
    split: str | Sequence[str] | None = None,
    iou: float = 0.5,
    top_k: Sequence[int] = (500, 2000),
) -> dict[str, float]:
    """Recall of the proposals on the labelled frames of a split.

    An object counts as found at k when one of its frame's first k proposals overlaps it at IoU >= ``iou``
    (``torchvision.ops.box_iou``; boxes in the project convention, x2/y2 exclusive). Objects marked
    ``difficult`` are left out, as in VOC evaluation.

    Args:
        proposals: ``{frame id: (N, 4) boxes}`` best first (e.g. from
            :func:`~student_trainer.proposals.files.load_proposals`).
        manifest: a :class:`~shared.manifest.Manifest` or its path.
        split: a split name, several, or None for every labelled frame.
        iou: the overlap threshold.
        top_k: the k values to report.

    Returns:
        ``{"frames": F, "objects": G, "mean_proposals": mean N, "recall@<k>": fraction in [0, 1], ...}``
        (recall is NaN when there are no objects).

    Raises:
        DataError: a labelled frame of the split has no proposals (names some), or no labelled frame.
        ValueError: ``iou`` not in (0, 1] or a k < 1.
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    if any(k < 1 for k in top_k):
        raise ValueError(f"top_k values must be >= 1, got {list(top_k)}")
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    names = [split] if isinstance(split, str) else split
    frames = [f for f in (m.split(*names) if names is not None else m) if f.labeled]
    if not frames:
        raise DataError(f"{m.source}: no labelled frames in {names if names is not None else 'the manifest'}")
    missing = [f.id for f in frames if f.id not in proposals]
    if missing:
        raise DataError(f"{len(missing)} labelled frame(s) have no proposals, e.g. {missing[:5]}")
    found = dict.fromkeys(top_k, 0)
    objects, counts = 0, []
    for f in frames:
        boxes = torch.as_tensor(np.asarray(proposals[f.id], np.float32).reshape(-1, 4))
        counts.append(len(boxes))
        gt = torch.tensor([o.box for o in f.objects or () if not o.difficult], dtype=torch.float32).reshape(-1, 4)
        objects += len(gt)
        if len(gt) == 0 or len(boxes) == 0:
            continue
        overlaps = box_iou(gt, boxes)  # (G, N)
        for k in top_k:
            found[k] += int((overlaps[:, :k].max(dim=1).values >= iou).sum())
    out = {"frames": float(len(frames)), "objects": float(objects), "mean_proposals": float(np.mean(counts))}
    out |= {f"recall@{k}": found[k] / objects if objects else float("nan") for k in top_k}
    return out
