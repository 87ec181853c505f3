"""Ground-truth boxes from a rendered instance mask: visible pixels only, so occlusion is respected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.manifest import ObjectBox

__all__ = ["visible_boxes"]


def visible_boxes(
    instance: np.ndarray,
    amodal: np.ndarray,
    labels: Sequence[str | None],
    min_pixels: int,
    min_fraction: float,
) -> list[ObjectBox]:
    """Boxes of the labelled objects that are visible enough.

    Args:
        instance: (H, W) int object index per pixel (-1 = no object), occlusion resolved.
        amodal: (n_objects,) pixels each object covers in the image when nothing occludes it.
        labels: label per object; None (clutter) gets no box.
        min_pixels: drop objects with fewer visible pixels.
        min_fraction: drop objects whose visible pixels are below this fraction of their unoccluded
            in-image area (objects cut by the image border are measured inside the image only).

    Returns:
        Boxes ``[x1, y1, x2, y2]`` in pixel-edge coordinates (x2/y2 exclusive) around the visible pixels,
        in object order.
    """
    boxes = []
    for k, label in enumerate(labels):
        if label is None:
            continue
        rows, cols = np.nonzero(instance == k)
        if rows.size < max(min_pixels, 1) or rows.size < min_fraction * amodal[k]:
            continue
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        boxes.append(ObjectBox(label=label, box=box))
    return boxes
