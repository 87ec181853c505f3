"""PASCAL VOC detection average precision: the protocol the paper (and Gupta et al.'s NYUD2 benchmark) reports.

The rules, as in the VOC devkit's ``VOCevaldet.m``, for each class separately:

* Detections of all frames are ranked by score, highest first, with a **stable** sort: equal scores keep input
  order, i.e. the iteration order of the ``detections`` mapping, then the order within each frame's arrays.
  The result therefore never depends on the sort algorithm, and ties are reproducible.
* In that order, each detection looks at the ground-truth box of its class in its frame with the highest IoU
  among **all** of them (difficult ones and ones already taken included; on equal IoU the first one). If that
  IoU is ``>= iou_threshold``: a difficult box makes the detection *ignored* (neither true nor false positive),
  a free box is taken (true positive), a taken one makes it a false positive (duplicate) -- even when another
  free box overlaps it enough. Otherwise it is a false positive. COCO's matcher (pycocotools, torchmetrics)
  instead tries the free boxes, so it scores some duplicates as hits: its numbers are not VOC AP.
* Recall = TP / (number of non-difficult boxes), precision = TP / (TP + FP), after each non-ignored
  detection. AP is the area under the precision envelope (precision made non-increasing in recall):
  all-point interpolation (VOC 2010 and later, the NYUD2 protocol) by default; ``use_07_metric`` gives the
  VOC 2007 11-point average of the envelope at recall 0, 0.1, ..., 1.
* A class without non-difficult ground truth has no recall, so its AP is NaN and it is left out of the mean.

Boxes follow :mod:`shared.boxes` (pixel-edge, x2/y2 exclusive, no ``+ 1``), so IoUs equal the devkit's for
boxes converted from its 1-based inclusive pixels. The IoU test is ``>=`` as in the devkit; the Python port in
py-faster-rcnn uses ``>``, which differs only for IoU exactly at the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from shared.boxes import iou_matrix

__all__ = [
    "EvalResult",
    "ap_table_markdown",
    "average_precision",
    "evaluate_detections",
    "save_pr_curves",
]

Detections = Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]]
GroundTruth = Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]]

# Recall thresholds of the 11-point metric, computed as k / 10 so that a recall of exactly 3/10 reaches the
# 0.3 threshold (np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 and would miss it).
_RECALL_POINTS_07 = np.arange(11) / 10.0

_DET_FIELDS = ("boxes", "scores", "labels")
_GT_FIELDS = ("boxes", "labels", "difficult")


@dataclass(frozen=True)
class EvalResult:
    """Per-class VOC AP with the precision/recall curves it came from.

    Attributes:
        classes: the C class names, in label order (label k is ``classes[k]``).
        ap: (C,) float64 AP in [0, 1] per class; NaN for a class with no non-difficult ground truth.
        precision: C arrays, array c of shape (D_c,): precision after each of the D_c non-ignored detections
            of class c, in rank order.
        recall: C arrays of shape (D_c,), recall at the same points (non-decreasing).
        num_gt: (C,) int64 number of non-difficult ground-truth boxes per class.
        iou_threshold: the IoU a detection needed to hit a box.
        use_07_metric: True for the VOC 2007 11-point AP, False for all-point AP.
    """

    classes: tuple[str, ...]
    ap: np.ndarray
    precision: tuple[np.ndarray, ...]
    recall: tuple[np.ndarray, ...]
    num_gt: np.ndarray
    iou_threshold: float
    use_07_metric: bool

    @property
    def mean_ap(self) -> float:
        """Mean AP over the classes that have ground truth (NaN when none has)."""
        valid = self.ap[~np.isnan(self.ap)]
        return float(valid.mean()) if valid.size else math.nan

    def ap_by_class(self) -> dict[str, float]:
        """``{class name: AP}``, NaN for classes without ground truth."""
        return {name: float(ap) for name, ap in zip(self.classes, self.ap, strict=True)}


@dataclass(frozen=True)
class _Frame:
    boxes: np.ndarray  # (N, 4) float64
    labels: np.ndarray  # (N,) int64
    extra: np.ndarray  # (N,) detection scores (float64) or ground-truth difficult flags (bool)


def _parse_frame(
    where: str, value: tuple[ArrayLike, ArrayLike, ArrayLike], fields: tuple[str, str, str], num_classes: int
) -> _Frame:
    """Validate one frame's arrays, named by ``fields`` in tuple order; ``where`` names the frame in errors."""
    try:
        arrays = dict(zip(fields, value, strict=True))
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a tuple ({', '.join(fields)}), got {value!r:.80}") from None
    is_detection = "scores" in arrays
    boxes = np.asarray(arrays["boxes"], dtype=np.float64)
    if boxes.size == 0 and boxes.ndim <= 2:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (N, 4), got shape {boxes.shape}")
    n = len(boxes)
    labels = np.asarray(arrays["labels"])
    extra_name = "scores" if is_detection else "difficult"
    extra = np.asarray(arrays[extra_name])
    for name, array in (("labels", labels), (extra_name, extra)):
        if array.shape != (n,):
            raise ValueError(f"{where}: {name} must have shape ({n},) to match {n} boxes, got shape {array.shape}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{where}: labels must be integer class indices, got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{where}: label {int(labels[bad][0])} is not a class index: expected 0..{num_classes - 1} "
            f"for {num_classes} classes"
        )
    if not np.isfinite(boxes).all():
        raise ValueError(f"{where}: boxes must be finite")
    if is_detection:
        extra = extra.astype(np.float64)
        if not np.isfinite(extra).all():
            raise ValueError(f"{where}: scores must be finite")
    else:
        extra = extra.astype(bool)
        if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            raise ValueError(f"{where}: ground-truth boxes must have x2 > x1 and y2 > y1")
    return _Frame(boxes, labels.astype(np.int64), extra)


def _match_class(
    label: int, dets: Mapping[str, _Frame], gts: Mapping[str, _Frame], iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Precision, recall and number of non-difficult boxes of one class (the module docstring's rules)."""
    # Number the class's ground-truth boxes across frames: box j of frame f is offsets[f] + j.
    gt_boxes = {f: gt.boxes[gt.labels == label] for f, gt in gts.items()}
    is_difficult = np.concatenate([np.zeros(0, bool), *(gt.extra[gt.labels == label] for gt in gts.values())])
    offsets = dict(zip(gts, np.cumsum([0, *map(len, gt_boxes.values())])[:-1].tolist(), strict=True))

    # Per detection, in input order: score, whether its best box overlaps enough, and that box's number.
    scores, hits, targets = [np.zeros(0)], [np.zeros(0, bool)], [np.zeros(0, np.int64)]
    for frame_id, det in dets.items():
        mine = det.labels == label
        iou = iou_matrix(det.boxes[mine], gt_boxes[frame_id])
        scores.append(det.extra[mine])
        hits.append(iou.max(axis=1, initial=0.0) >= iou_threshold)
        best = iou.argmax(axis=1) if iou.shape[1] else np.zeros(len(iou), np.int64)  # first on equal IoU
        targets.append(offsets[frame_id] + best)
    order = np.argsort(-np.concatenate(scores), kind="stable")
    ranked_hits, ranked_targets = np.concatenate(hits)[order], np.concatenate(targets)[order]

    taken = np.zeros(len(is_difficult), bool)
    outcome = np.zeros(len(order), np.int8)  # 1 true positive, 0 false positive, -1 ignored
    for rank, (hit, g) in enumerate(zip(ranked_hits.tolist(), ranked_targets.tolist(), strict=True)):
        if not hit:
            continue
        if is_difficult[g]:
            outcome[rank] = -1
        elif not taken[g]:
            taken[g] = True
            outcome[rank] = 1
    scored = outcome[outcome >= 0]
    tp = np.cumsum(scored == 1)
    fp = np.cumsum(scored == 0)
    num_gt = int((~is_difficult).sum())
    recall = tp / num_gt if num_gt else np.full(len(tp), math.nan)
    return tp / (tp + fp), recall, num_gt


def average_precision(precision: ArrayLike, recall: ArrayLike, use_07_metric: bool = False) -> float:
    """Area under a precision/recall curve, VOC style.

    Args:
        precision: (D,) precision after each ranked detection.
        recall: (D,) recall at the same points, non-decreasing, in [0, 1].
        use_07_metric: False: all-point AP, the exact area under the precision envelope
            ``p_interp(r) = max(precision[recall >= r])`` (VOC 2010+); True: the 11-point mean of the
            envelope at recall 0, 0.1, ..., 1.0 (VOC 2007). Where no recall reaches r, the envelope is 0.

    Returns:
        AP in [0, 1]; 0 for empty curves.

    Raises:
        ValueError: the arrays are not 1-D of equal length.
    """
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.ndim != 1 or p.shape != r.shape:
        raise ValueError(f"precision and recall must be 1-D of equal length, got shapes {p.shape} and {r.shape}")
    if use_07_metric:
        envelope = [p[r >= t].max() if (r >= t).any() else 0.0 for t in _RECALL_POINTS_07]
        return float(np.mean(envelope))
    mrec = np.concatenate([[0.0], r, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], p, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def evaluate_detections(
    detections: Detections,
    ground_truth: GroundTruth,
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> EvalResult:
    """PASCAL VOC AP per class and mean, by the rules in this module's docstring.

    Args:
        detections: ``{frame_id: (boxes (N, 4), scores (N,), labels (N,))}``; labels are 0-based indices into
            ``classes`` (a torchvision detector's labels minus 1: its 0 is background). Arrays may be numpy,
            lists or CPU tensors. A frame absent from it has no detections.
        ground_truth: ``{frame_id: (boxes (M, 4), labels (M,), difficult (M,) bool)}`` for every evaluated
            frame, including frames without objects (M = 0); boxes need positive width and height.
        classes: the C class names.
        iou_threshold: IoU in (0, 1] a detection needs to hit a box (0.5 in VOC).
        use_07_metric: VOC 2007 11-point AP instead of all-point AP.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ValueError: bad shapes, a label outside ``0..C-1``, non-finite boxes or scores, empty ground-truth
            boxes, a detection frame missing from ``ground_truth``, no classes, or a bad threshold.
        TypeError: labels that are not integers.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if not classes:
        raise ValueError("classes must name at least one class, got an empty list")
    num_classes = len(classes)
    gts = {f: _parse_frame(f"ground_truth[{f!r}]", v, _GT_FIELDS, num_classes) for f, v in ground_truth.items()}
    unknown = [f for f in detections if f not in gts]
    if unknown:
        raise ValueError(
            f"detections for {len(unknown)} frame(s) without ground truth, e.g. {unknown[0]!r}: "
            "every evaluated frame needs an entry in ground_truth (possibly with no boxes)"
        )
    dets = {f: _parse_frame(f"detections[{f!r}]", v, _DET_FIELDS, num_classes) for f, v in detections.items()}

    per_class = [_match_class(c, dets, gts, iou_threshold) for c in range(num_classes)]
    ap = np.array(
        [average_precision(p, r, use_07_metric) if n else math.nan for p, r, n in per_class], dtype=np.float64
    )
    return EvalResult(
        classes=tuple(classes),
        ap=ap,
        precision=tuple(p for p, _, _ in per_class),
        recall=tuple(r for _, r, _ in per_class),
        num_gt=np.array([n for _, _, n in per_class], dtype=np.int64),
        iou_threshold=float(iou_threshold),
        use_07_metric=use_07_metric,
    )


def ap_table_markdown(results: Mapping[str, EvalResult], digits: int = 1) -> str:
    """A Markdown table of AP in percent, one row per method, one column per class, then the mean.

    The layout of the paper's Table 1. Classes without ground truth show ``n/a``.

    Args:
        results: ``{method name: EvalResult}``, rows in this order; all evaluated with the same classes,
            threshold and metric.
        digits: decimals of the percentages.

    Returns:
        The table, lines joined by ``\\n``, ending with a newline.

    Raises:
        ValueError: no results, or results whose classes, threshold or metric differ.
    """
    if not results:
        raise ValueError("results must hold at least one method, got none")
    first_name, first = next(iter(results.items()))
    protocol = (first.classes, first.iou_threshold, first.use_07_metric)
    for name, result in results.items():
        if (result.classes, result.iou_threshold, result.use_07_metric) != protocol:
            raise ValueError(
                f"result {name!r} was evaluated with (classes, iou_threshold, use_07_metric) = "
                f"{(result.classes, result.iou_threshold, result.use_07_metric)}, expected "
                f"{protocol} as for {first_name!r}: one table compares one protocol"
            )

    def cell(ap: float) -> str:
        return "n/a" if math.isnan(ap) else f"{100 * ap:.{digits}f}"

    lines = [
        "| method | " + " | ".join(first.classes) + " | mean |",
        "|---|" + "---:|" * (len(first.classes) + 1),
    ]
    for name, result in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(ap) for ap in result.ap) + f" | {cell(result.mean_ap)} |")
    return "\n".join(lines) + "\n"


def save_pr_curves(result: EvalResult, path_png: str | Path) -> Path:
    """Plot the precision/recall curve of every class that has ground truth into one PNG.

    Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend change).

    Args:
        result: the evaluation to plot.
        path_png: output file; missing parent directories are created.

    Returns:
        The path written.
    """
    path = Path(path_png)
    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, ap, precision, recall in zip(result.classes, result.ap, result.precision, result.recall, strict=True):
        if not math.isnan(ap):
            ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} ({100 * ap:.1f})")
    metric = "11-point" if result.use_07_metric else "all-point"
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="recall",
        ylabel="precision",
        title=f"VOC AP@{result.iou_threshold:g} ({metric}): mean {100 * result.mean_ap:.1f}",
    )
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", title="class (AP %)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
