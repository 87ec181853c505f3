"""Late fusion of two detectors that scored the same proposals (the paper's RGB + D fusion).

Gupta, Hoffman and Malik average the class scores *before* the softmax and average the box-regression
outputs, 0.5 / 0.5. Averaging logits is not averaging probabilities: ``softmax((a + b) / 2)`` is the normalised
geometric mean ``sqrt(softmax(a) * softmax(b))``, so a class that either detector rules out stays unlikely,
whereas the arithmetic mean of probabilities would keep half of the other detector's confidence.

Fusion is only meaningful row by row on one proposal set: row r of both detectors must score the same box.
Shapes are checked; that both used the same proposals in the same order is the caller's contract.

When one detector is far weaker (flow from 96x128 DIS next to RGB), an even average can fall below the stronger
one alone; :func:`choose_fusion_weight` picks the weight on a validation split instead.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FUSION_WEIGHTS", "choose_fusion_weight", "fuse_outputs"]

FUSION_WEIGHTS: tuple[float, ...] = tuple(i / 10 for i in range(11))
"""Weights of detector a (RGB in the comparisons) that a validation split chooses from: 1.0 is a alone, 0.0 b alone."""


def fuse_outputs(
    logits_a: torch.Tensor,
    deltas_a: torch.Tensor,
    logits_b: torch.Tensor,
    deltas_b: torch.Tensor,
    weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted average of two detectors' class logits and box deltas on the same R proposals.

    ``fused = weight * a + (1 - weight) * b``, computed as ``torch.lerp(b, a, weight)`` so that equal inputs give
    that input back exactly. Apply the softmax (and decode the deltas) after fusing.

    Args:
        logits_a: (R, K+1) class logits of detector a, background at column 0 (torchvision's layout).
        deltas_a: (R, 4*(K+1)) class-specific box deltas of detector a (see :func:`shared.boxes.decode_boxes`).
        logits_b: (R, K+1) class logits of detector b on the same proposals, same dtype and device.
        deltas_b: (R, 4*(K+1)) box deltas of detector b. Both detectors must share box-coder weights.
        weight: weight of detector a in [0, 1]; 0.5 is the paper's fusion.

    Returns:
        ``(logits, deltas)``: fused (R, K+1) logits and (R, 4*(K+1)) deltas.

    Raises:
        ValueError: a or b not shaped (R, K+1) / (R, 4*(K+1)), a and b of different shapes (different proposal
            sets or class lists), or weight outside [0, 1].
        TypeError: tensors of different dtypes.
    """
    if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    for name, logits, deltas in (("a", logits_a, deltas_a), ("b", logits_b, deltas_b)):
        if logits.ndim != 2 or deltas.shape != (logits.shape[0], 4 * logits.shape[1]):
            raise ValueError(
                f"detector {name}: expected logits (R, K+1) and deltas (R, 4*(K+1)), got logits "
                f"{tuple(logits.shape)} and deltas {tuple(deltas.shape)}"
            )
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"both detectors must score the same proposals and classes: logits (R, K+1) of a are "
            f"{tuple(logits_a.shape)}, of b {tuple(logits_b.shape)}"
        )
    dtypes = {logits_a.dtype, deltas_a.dtype, logits_b.dtype, deltas_b.dtype}
    if len(dtypes) > 1:
        raise TypeError(f"all four tensors must share one dtype, got {sorted(map(str, dtypes))}")
    return torch.lerp(logits_b, logits_a, weight), torch.lerp(deltas_b, deltas_a, weight)


def choose_fusion_weight(val_map: dict[float, float]) -> float:
    """The weight of the best validation mAP; ties go to the weight nearest the paper's 0.5 (NaN never wins)."""
    finite = {w: m for w, m in val_map.items() if not math.isnan(m)}
    if not finite:
        raise ValueError(f"no finite validation mAP among {val_map}")
    return max(finite, key=lambda w: (finite[w], -abs(w - 0.5)))
