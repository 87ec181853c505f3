"""PASCAL VOC AP: hand-worked PR curves, the VOC matching rule, and a cross-check against pycocotools."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from student_trainer.voc_eval import (
    EvalResult,
    ap_table_markdown,
    average_precision,
    evaluate_detections,
    save_pr_curves,
)

NO_PYCOCOTOOLS = "pycocotools is not installed (dev extra); the COCO side of the comparison cannot run"


def _frame_gt(boxes: list[list[float]], labels: list[int] | None = None, difficult: list[bool] | None = None):
    n = len(boxes)
    return (
        np.asarray(boxes, dtype=np.float64).reshape(n, 4),
        np.asarray(labels if labels is not None else [0] * n, dtype=np.int64),
        np.asarray(difficult if difficult is not None else [False] * n),
    )


def _frame_dets(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None):
    n = len(boxes)
    return (
        np.asarray(boxes, dtype=np.float64).reshape(n, 4),
        np.asarray(scores, dtype=np.float64),
        np.asarray(labels if labels is not None else [0] * n, dtype=np.int64),
    )


def _pattern_case(pattern: str, num_gt: int) -> tuple[dict, dict]:
    """One frame with ``num_gt`` separated boxes; detections ranked in pattern order (scores strictly
    decreasing): ``T`` lands exactly on the next unused box, ``F`` lands far from every box."""
    gt_boxes = [[100.0 * i, 0.0, 100.0 * i + 50, 50.0] for i in range(num_gt)]
    det_boxes, used = [], 0
    for k, outcome in enumerate(pattern):
        if outcome == "T":
            det_boxes.append(gt_boxes[used])
            used += 1
        else:
            det_boxes.append([100.0 * k, 500.0, 100.0 * k + 50, 550.0])
    scores = [1.0 - k / (len(pattern) + 1) for k in range(len(pattern))]
    return {"f": _frame_dets(det_boxes, scores)}, {"f": _frame_gt(gt_boxes)}


def _coco_ap50(detections: dict, ground_truth: dict, num_classes: int) -> np.ndarray:
    """Per-class AP at IoU 0.5 from pycocotools (101-point interpolation, COCO matching); NaN without gt."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = {frame_id: i + 1 for i, frame_id in enumerate(ground_truth)}

    def xywh(box: np.ndarray) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    annotations = [
        {"image_id": image_ids[f], "category_id": int(label) + 1, "bbox": xywh(box), "iscrowd": 0}
        for f, (boxes, labels, _) in ground_truth.items()
        for box, label in zip(boxes, labels, strict=True)
    ]
    for k, ann in enumerate(annotations, 1):
        ann.update(id=k, area=ann["bbox"][2] * ann["bbox"][3])
    results = [
        {"image_id": image_ids[f], "category_id": int(label) + 1, "bbox": xywh(box), "score": float(score)}
        for f, (boxes, scores, labels) in detections.items()
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i} for i in image_ids.values()],
            "annotations": annotations,
            "categories": [{"id": c + 1} for c in range(num_classes)],
        }
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.maxDets = [100]
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, 0]  # (101 recall points, classes)
    return np.array([col.mean() if (col > -1).all() else math.nan for col in precision.T])


def _ap_101_point(precision: np.ndarray, recall: np.ndarray) -> float:
    """COCO's interpolation applied to our precision/recall: the envelope sampled at recall 0, 0.01, ..., 1."""
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in index]))


# (a) The VOC rule: a detection whose best-overlap box is taken is a false positive, even when another free
# box overlaps it by >= 0.5. COCO tries the free boxes instead. B = [10,0,110,100] overlaps both boxes by
# 90x100 = 9000 of a union 11000 (IoU 9/11 each; the first, GT0, wins the tie as MATLAB's max does);
# B = [5,0,105,100] prefers GT0 outright (IoU 9500/10500 = 0.905 vs 8500/11500 = 0.739 with GT1).
OVERLAPPING_GT = {"img": _frame_gt([[0, 0, 100, 100], [20, 0, 120, 100]])}


@pytest.mark.parametrize("det_b", [[10, 0, 110, 100], [5, 0, 105, 100]])
def test_voc_duplicate_rule_makes_second_detection_a_false_positive(det_b: list[float]) -> None:
    dets = {"img": _frame_dets([[0, 0, 100, 100], det_b], [0.9, 0.8])}
    result = evaluate_detections(dets, OVERLAPPING_GT, ["obj"])
    # A takes GT0 (TP), B's best box GT0 is taken (FP): precision [1, 1/2], recall [1/2, 1/2];
    # all-point AP = 1/2 * 1 (recall 0 -> 1/2 at precision 1), recall never passes 1/2.
    np.testing.assert_array_equal(result.precision[0], [1.0, 0.5])
    np.testing.assert_array_equal(result.recall[0], [0.5, 0.5])
    assert result.ap[0] == 0.5 and result.mean_ap == 0.5


@pytest.mark.parametrize("det_b", [[10, 0, 110, 100], [5, 0, 105, 100]])
def test_pycocotools_scores_the_same_case_as_a_hit(det_b: list[float]) -> None:
    pytest.importorskip("pycocotools", reason=NO_PYCOCOTOOLS)
    dets = {"img": _frame_dets([[0, 0, 100, 100], det_b], [0.9, 0.8])}
    # COCO matches B to the free GT1 (IoU >= 0.5): two hits, AP 1.0, where VOC gives 0.5.
    assert _coco_ap50(dets, OVERLAPPING_GT, 1)[0] == pytest.approx(1.0, abs=1e-12)
    assert evaluate_detections(dets, OVERLAPPING_GT, ["obj"]).ap[0] == 0.5


# (b) Hand-worked PR curves; P = precision, R = recall after each detection.
@pytest.mark.parametrize(
    ("pattern", "num_gt", "all_point", "eleven_point"),
    [
        # TP, FP, TP, FP, FP, TP of 4 boxes: P = 1, 1/2, 2/3, 1/2, 2/5, 1/2; R = 1/4, 1/4, 1/2, 1/2, 1/2, 3/4.
        # Envelope: 1 on (0, 1/4], 2/3 on (1/4, 1/2], 1/2 on (1/2, 3/4], 0 after.
        # All-point: 1/4 * 1 + 1/4 * 2/3 + 1/4 * 1/2 = 13/24.
        # 11-point: r = 0, .1, .2 -> 1; .3, .4, .5 -> 2/3; .6, .7 -> 1/2; .8, .9, 1 -> 0: (3 + 2 + 1) / 11.
        ("TFTFFT", 4, 13 / 24, 6 / 11),
        # FP, TP, FP, TP, TP of 5 boxes: P = 0, 1/2, 1/3, 1/2, 3/5; R = 0, 1/5, 1/5, 2/5, 3/5.
        # The envelope is 3/5 up to recall 3/5 (the last point lifts the earlier dips).
        # All-point: 3/5 * 3/5 = 9/25. 11-point: r = 0 .. .6 (7 points) -> 3/5: 7 * 3/5 / 11 = 21/55.
        ("FTFTT", 5, 9 / 25, 21 / 55),
        # 3 TP of 10 boxes: recall stops at exactly 3/10. All-point 3/10. 11-point: r = 0, .1, .2, .3 -> 1:
        # 4/11 (with np.arange(0, 1.1, 0.1) as in py-faster-rcnn the 0.3 point is 0.30000000000000004 and
        # missed, giving 3/11).
        ("TTT", 10, 3 / 10, 4 / 11),
        # 3 FP then the only box: P = 0, 0, 0, 1/4 at R = 1: both metrics 1/4.
        ("FFFT", 1, 1 / 4, 1 / 4),
        ("TTTT", 4, 1.0, 1.0),  # perfect
        ("FF", 2, 0.0, 0.0),  # nothing found
        ("", 3, 0.0, 0.0),  # no detections at all
    ],
)
def test_hand_worked_pr_curves(pattern: str, num_gt: int, all_point: float, eleven_point: float) -> None:
    dets, gt = _pattern_case(pattern, num_gt)
    assert evaluate_detections(dets, gt, ["obj"]).ap[0] == pytest.approx(all_point, abs=1e-12)
    assert evaluate_detections(dets, gt, ["obj"], use_07_metric=True).ap[0] == pytest.approx(eleven_point, abs=1e-12)


def test_precision_recall_arrays_of_a_hand_case() -> None:
    dets, gt = _pattern_case("TFTFFT", 4)
    result = evaluate_detections(dets, gt, ["obj"])
    np.testing.assert_allclose(result.precision[0], [1, 1 / 2, 2 / 3, 1 / 2, 2 / 5, 1 / 2], rtol=1e-15)
    np.testing.assert_allclose(result.recall[0], [1 / 4, 1 / 4, 1 / 2, 1 / 2, 1 / 2, 3 / 4], rtol=1e-15)
    assert result.num_gt.tolist() == [4]


def test_ranking_is_by_score_not_input_order() -> None:
    dets, gt = _pattern_case("TFTFFT", 4)
    boxes, scores, labels = dets["f"]
    reverse = {"f": (boxes[::-1], scores[::-1], labels[::-1])}
    assert evaluate_detections(reverse, gt, ["obj"]).ap[0] == pytest.approx(13 / 24, abs=1e-12)


def test_average_precision_direct() -> None:
    assert average_precision([1.0, 0.5], [0.5, 0.5]) == 0.5
    assert average_precision([], []) == 0.0
    with pytest.raises(ValueError, match=r"equal length, got shapes \(2,\) and \(1,\)"):
        average_precision([1.0, 0.5], [0.5])


# (c) Equal scores keep input order: frames in mapping order, then array order within a frame.
def test_score_ties_keep_input_order_across_frames() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10]]), "b": _frame_gt([])}
    hit, miss = _frame_dets([[0, 0, 10, 10]], [0.5]), _frame_dets([[50, 50, 60, 60]], [0.5])
    # hit first: P = 1, 1/2 at R = 1, 1 -> AP 1. miss first: P = 0, 1/2 at R = 0, 1 -> AP 1/2.
    assert evaluate_detections({"a": hit, "b": miss}, gt, ["obj"]).ap[0] == 1.0
    assert evaluate_detections({"b": miss, "a": hit}, gt, ["obj"]).ap[0] == 0.5


def test_score_ties_keep_input_order_within_a_frame() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10]])}
    hit_first = _frame_dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.5, 0.5])
    miss_first = _frame_dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.5, 0.5])
    assert evaluate_detections({"a": hit_first}, gt, ["obj"]).ap[0] == 1.0
    assert evaluate_detections({"a": miss_first}, gt, ["obj"]).ap[0] == 0.5


def test_many_equal_scores_rank_in_input_order() -> None:
    # 64 detections on two score levels, interleaved: enough ties that an unstable sort reorders them.
    rng = np.random.default_rng(3)
    pattern = "".join(rng.choice(["T", "F"], 64))
    dets, gt = _pattern_case(pattern, pattern.count("T") + 5)
    boxes, scores, labels = dets["f"]
    high = rng.random(64) < 0.4
    tied = evaluate_detections({"f": (boxes, np.where(high, 0.9, 0.5), labels)}, gt, ["obj"])
    # Expected rank: the 0.9s in input order, then the 0.5s in input order (strictly decreasing scores).
    order = np.concatenate([np.flatnonzero(high), np.flatnonzero(~high)])
    ranked = evaluate_detections({"f": (boxes[order], scores, labels)}, gt, ["obj"])
    np.testing.assert_array_equal(tied.precision[0], ranked.precision[0])
    assert tied.ap[0] == ranked.ap[0]


# (d) Difficult boxes.
def test_detections_on_difficult_boxes_are_ignored() -> None:
    gt = {"a": _frame_gt([[0, 0, 100, 100], [300, 0, 400, 100]], difficult=[False, True])}
    dets = {
        "a": _frame_dets(
            [[500, 500, 600, 600], [300, 0, 400, 100], [0, 0, 100, 100], [300, 0, 400, 100]],
            [0.95, 0.9, 0.8, 0.7],  # FP, on the difficult box, TP, on the difficult box again
        )
    }
    result = evaluate_detections(dets, gt, ["obj"])
    # Only FP, TP count: P = 0, 1/2; R = 0, 1; all-point AP = 1/2. The difficult box is not in the recall.
    assert result.num_gt.tolist() == [1]
    np.testing.assert_array_equal(result.precision[0], [0.0, 0.5])
    np.testing.assert_array_equal(result.recall[0], [0.0, 1.0])
    assert result.ap[0] == 0.5


def test_detection_whose_best_box_is_difficult_is_ignored_even_if_a_normal_box_overlaps() -> None:
    gt = {"a": _frame_gt([[0, 0, 100, 100], [10, 0, 110, 100]], difficult=[False, True])}
    # IoU with the difficult box 9800/10200 = 0.96 beats 9200/10800 = 0.85 with the normal one: ignored,
    # the normal box stays unfound, no scored detection: AP 0.
    result = evaluate_detections({"a": _frame_dets([[8, 0, 108, 100]], [0.9])}, gt, ["obj"])
    assert result.precision[0].size == 0 and result.ap[0] == 0.0


def test_detection_below_threshold_on_a_difficult_box_is_a_false_positive() -> None:
    gt = {"a": _frame_gt([[0, 0, 100, 100], [300, 0, 400, 100]], difficult=[False, True])}
    dets = {"a": _frame_dets([[350, 0, 450, 100], [0, 0, 100, 100]], [0.9, 0.8])}  # IoU 1/3 with the difficult
    result = evaluate_detections(dets, gt, ["obj"])
    np.testing.assert_array_equal(result.precision[0], [0.0, 0.5])
    assert result.ap[0] == 0.5


def test_class_with_only_difficult_boxes_has_nan_ap() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10]], difficult=[True])}
    result = evaluate_detections({"a": _frame_dets([[0, 0, 10, 10]], [0.9])}, gt, ["obj"])
    assert math.isnan(result.ap[0]) and math.isnan(result.mean_ap)


# (e) Classes without ground truth.
def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10], [20, 0, 30, 10]], labels=[0, 2])}
    dets = {
        "a": _frame_dets(
            [[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10], [40, 40, 45, 45]],
            [0.9, 0.8, 0.7, 0.6],
            labels=[0, 1, 2, 2],  # class 1 has detections but no box
        )
    }
    result = evaluate_detections(dets, gt, ["chair", "table", "bed"])
    assert result.ap[0] == 1.0 and math.isnan(result.ap[1]) and result.ap[2] == 1.0
    assert result.mean_ap == 1.0
    assert result.num_gt.tolist() == [1, 0, 1]
    assert result.ap_by_class()["chair"] == 1.0 and math.isnan(result.ap_by_class()["table"])


def test_labels_are_evaluated_per_class() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10]], labels=[1])}
    wrong_class = {"a": _frame_dets([[0, 0, 10, 10]], [0.9], labels=[0])}
    result = evaluate_detections(wrong_class, gt, ["x", "y"])
    assert math.isnan(result.ap[0]) and result.ap[1] == 0.0


def test_accepts_lists_and_cpu_tensors() -> None:
    gt = {"a": ([[0.0, 0.0, 10.0, 10.0]], [0], [False])}
    dets = {"a": (torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([0.3]), torch.tensor([0]))}
    assert evaluate_detections(dets, gt, ["obj"]).ap[0] == 1.0


# (f) Agreement with pycocotools where the two protocols agree.
def _separated_case(rng: np.random.Generator, num_frames: int, num_classes: int) -> tuple[dict, dict]:
    """Boxes in the cells of a 4x4 grid of 60-pixel cells, every detection inside one cell: a detection can
    only overlap its own cell's box, so VOC's and COCO's matchers choose the same box. Includes misses,
    duplicates, low-IoU hits, wrong-class detections and detections on empty cells."""
    detections, ground_truth = {}, {}
    for f in range(num_frames):
        gt_boxes, gt_labels, det_boxes, det_labels = [], [], [], []
        for cell in range(16):
            x0, y0 = 60.0 * (cell % 4), 60.0 * (cell // 4)
            size = rng.uniform(20, 40, 2)
            corner = np.array([x0, y0]) + rng.uniform(5, 55 - size, 2)
            has_box = rng.random() < 0.6
            label = int(rng.integers(num_classes))
            if has_box:
                gt_boxes.append([*corner, *(corner + size)])
                gt_labels.append(label)
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections per cell
                jitter = rng.normal(0, 4, 4)
                box = np.clip(np.array([*corner, *(corner + size)]) + jitter, [x0, y0] * 2, [x0 + 59, y0 + 59] * 2)
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    continue
                det_boxes.append(box)
                det_labels.append(label if rng.random() < 0.85 else int(rng.integers(num_classes)))
        frame_id = f"synth.{f:04d}"
        ground_truth[frame_id] = _frame_gt(gt_boxes, gt_labels)
        detections[frame_id] = _frame_dets(det_boxes, rng.random(len(det_boxes)).tolist(), det_labels)
    return detections, ground_truth


@pytest.mark.parametrize("seed", range(12))
def test_matching_agrees_with_pycocotools_on_separated_boxes(seed: int) -> None:
    pytest.importorskip("pycocotools", reason=NO_PYCOCOTOOLS)
    num_classes = 3
    dets, gt = _separated_case(np.random.default_rng(seed), num_frames=6, num_classes=num_classes)
    result = evaluate_detections(dets, gt, [f"c{c}" for c in range(num_classes)])
    coco = _coco_ap50(dets, gt, num_classes)
    np.testing.assert_array_equal(np.isnan(coco), np.isnan(result.ap))
    for c in np.flatnonzero(~np.isnan(coco)):
        # Same matching: COCO's 101-point interpolation of OUR precision/recall reproduces COCO's AP exactly.
        assert _ap_101_point(result.precision[c], result.recall[c]) == pytest.approx(coco[c], abs=1e-12)
        # Different interpolation: for a non-increasing envelope p, all-point AP is the integral of p and the
        # 101-point AP the mean of p(k/100); they differ by at most 1/100.
        assert abs(result.ap[c] - coco[c]) <= 0.01 + 1e-12


# (g) Bad input.
@pytest.mark.parametrize(
    ("dets", "error", "match"),
    [
        ({"a": (np.zeros((1, 3)), [0.5], [0])}, ValueError, r"detections\['a'\]: boxes must have shape \(N, 4\)"),
        (
            {"a": (np.zeros((2, 4)), np.zeros(3), np.zeros(2, np.int64))},
            ValueError,
            r"detections\['a'\]: scores must have shape \(2,\) to match 2 boxes, got shape \(3,\)",
        ),
        (
            {"a": (np.zeros((2, 4)), np.zeros(2), np.zeros(1, np.int64))},
            ValueError,
            r"labels must have shape \(2,\) to match 2 boxes, got shape \(1,\)",
        ),
        ({"a": _frame_dets([[0, 0, 1, 1]], [0.5], [2])}, ValueError, r"label 2 is not a class index: expected 0..1"),
        ({"a": _frame_dets([[0, 0, 1, 1]], [0.5], [-1])}, ValueError, r"label -1 is not a class index"),
        (
            {"a": (np.zeros((1, 4)), np.zeros(1), np.zeros(1))},
            TypeError,
            r"labels must be integer class indices, got dtype float64",
        ),
        ({"a": _frame_dets([[0, 0, 1, 1]], [math.nan])}, ValueError, r"scores must be finite"),
        ({"zz": _frame_dets([[0, 0, 1, 1]], [0.5])}, ValueError, r"1 frame\(s\) without ground truth, e\.g\. 'zz'"),
        ({"a": (np.zeros((1, 4)), np.zeros(1))}, ValueError, r"must be a tuple \(boxes, scores, labels\)"),
    ],
)
def test_bad_detections_are_rejected(dets: dict, error: type[Exception], match: str) -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10]])}
    with pytest.raises(error, match=match):
        evaluate_detections(dets, gt, ["x", "y"])


def test_bad_ground_truth_and_arguments_are_rejected() -> None:
    ok = {"a": _frame_gt([[0, 0, 10, 10]])}
    with pytest.raises(ValueError, match=r"ground_truth\['a'\]: ground-truth boxes must have x2 > x1"):
        evaluate_detections({}, {"a": _frame_gt([[5, 0, 5, 10]])}, ["x"])
    with pytest.raises(ValueError, match=r"ground_truth\['a'\]: difficult must have shape \(1,\)"):
        evaluate_detections({}, {"a": (np.zeros((1, 4)), np.zeros(1, np.int64), np.zeros(2, bool))}, ["x"])
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\], got 0"):
        evaluate_detections({}, ok, ["x"], iou_threshold=0)
    with pytest.raises(ValueError, match="at least one class"):
        evaluate_detections({}, ok, [])


# Reporting.
def test_ap_table_markdown() -> None:
    gt = {"a": _frame_gt([[0, 0, 10, 10], [20, 0, 30, 10]], labels=[0, 1])}
    perfect = evaluate_detections(
        {"a": _frame_dets([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.8], [0, 1])}, gt, ["bed", "chair", "sofa"]
    )
    half = evaluate_detections(
        {"a": _frame_dets([[50, 0, 60, 10], [0, 0, 10, 10]], [0.9, 0.8], [0, 0])}, gt, ["bed", "chair", "sofa"]
    )
    table = ap_table_markdown({"copy from RGB": half, "supervision transfer": perfect})
    assert table == (
        "| method | bed | chair | sofa | mean |\n"
        "|---|---:|---:|---:|---:|\n"
        "| copy from RGB | 50.0 | 0.0 | n/a | 25.0 |\n"
        "| supervision transfer | 100.0 | 100.0 | n/a | 100.0 |\n"
    )


def test_ap_table_refuses_mixed_protocols() -> None:
    dets, gt = _pattern_case("TF", 1)
    all_point = evaluate_detections(dets, gt, ["obj"])
    eleven = evaluate_detections(dets, gt, ["obj"], use_07_metric=True)
    with pytest.raises(ValueError, match=r"result 'b' was evaluated with .* expected .* as for 'a'"):
        ap_table_markdown({"a": all_point, "b": eleven})
    with pytest.raises(ValueError, match="at least one method"):
        ap_table_markdown({})


def test_save_pr_curves_writes_a_png(tmp_path) -> None:
    dets, gt = _pattern_case("TFTFFT", 4)
    result = evaluate_detections(dets, gt, ["obj"])
    assert isinstance(result, EvalResult)
    path = save_pr_curves(result, tmp_path / "plots" / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
