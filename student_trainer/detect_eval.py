"""Evaluation of trained detectors: per-RoI outputs on a split, VOC AP reports, and late fusion of two detectors.

``roi_outputs.npz`` (``frame_ids``, ``offsets`` (F + 1,), ``proposals`` (R, 4) frame pixels, ``logits`` (R, K + 1),
``deltas`` (R, 4 (K + 1)), ``image_sizes``, ``classes``, ``split``, ``box_weights``) keeps the raw outputs of a
detector on its test split, so :func:`evaluate_fused` can combine two detectors afterwards without re-running
either; :func:`write_evaluation` writes ``eval.json``, ``ap.md``, ``pr_curves.png`` and ``detections.npz``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from shared.atomic import write_json_atomic, write_text_atomic
from shared.boxes import DEFAULT_BOX_CODER_WEIGHTS
from shared.device import autocast_dtype
from shared.errors import DataError
from shared.manifest import Manifest, read_manifest
from shared.modalities import Modality
from student_trainer.detect_data import DetectFrame, EvalFrames, pad_images, split_ground_truth
from student_trainer.detect_settings import DetectSettings
from student_trainer.detector import FastRCNN, postprocess_detections
from student_trainer.engine import evaluate
from student_trainer.fusion import fuse_outputs
from student_trainer.voc_eval import EvalResult, ap_table_markdown, evaluate_detections, save_pr_curves

__all__ = ["ROI_OUTPUTS", "RoIOutputs", "evaluate_fused", "fused_map_by_weight", "score_frames", "write_evaluation"]

ROI_OUTPUTS = "roi_outputs.npz"


@dataclass
class RoIOutputs:
    """Raw outputs of one detector on a split: per frame, its proposals (frame pixels), logits and deltas."""

    frame_ids: list[str]
    image_sizes: np.ndarray  # (F, 2) height, width
    offsets: np.ndarray  # (F + 1,): frame i's RoIs are rows offsets[i]:offsets[i + 1]
    proposals: np.ndarray  # (R, 4) float32
    logits: np.ndarray  # (R, K + 1) float32
    deltas: np.ndarray  # (R, 4 (K + 1)) float32
    classes: list[str]
    split: str

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, frame_ids=np.array(self.frame_ids), image_sizes=self.image_sizes,
                            offsets=self.offsets, proposals=self.proposals, logits=self.logits, deltas=self.deltas,
                            classes=np.array(self.classes), split=np.array(self.split),
                            box_weights=np.array(DEFAULT_BOX_CODER_WEIGHTS))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RoIOutputs:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: evaluate the detector first (student-trainer detect)")
        with np.load(path) as z:
            return cls([str(i) for i in z["frame_ids"]], z["image_sizes"], z["offsets"], z["proposals"],
                       z["logits"], z["deltas"], [str(c) for c in z["classes"]], str(z["split"]))

    def detections(self, logits: np.ndarray | None = None, deltas: np.ndarray | None = None, *,
                   score_thresh: float, nms_thresh: float, max_detections: int) -> dict[str, tuple]:
        """``{frame id: (boxes, scores, labels)}`` from these (or other, e.g. fused) outputs on these proposals."""
        lg = torch.from_numpy(self.logits if logits is None else logits)
        dl = torch.from_numpy(self.deltas if deltas is None else deltas)
        props = torch.from_numpy(self.proposals)
        out = {}
        for i, fid in enumerate(self.frame_ids):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            size = (int(self.image_sizes[i, 0]), int(self.image_sizes[i, 1]))
            boxes, scores, labels = postprocess_detections(lg[a:b], dl[a:b], props[a:b], size, score_thresh,
                                                           nms_thresh, max_detections)
            out[fid] = (boxes.numpy(), scores.numpy(), labels.numpy())
        return out


def score_frames(model: FastRCNN, frames: Sequence[DetectFrame], mod: Modality, s: DetectSettings,
                 device: torch.device, split: str, classes: Sequence[str]) -> RoIOutputs:
    """Logits and deltas of every proposal of every frame (model in eval mode, no flips)."""
    loader = DataLoader(EvalFrames(frames, mod, s.short_side, s.max_side), batch_size=s.eval_batch_size,
                        collate_fn=list, num_workers=s.loader_workers)

    def score(m: torch.nn.Module, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        images = pad_images([f.image for f in batch]).to(device, memory_format=torch.channels_last)
        lg, dl = m(images, [f.proposals.to(device) for f in batch])
        return lg.float().cpu(), dl.float().cpu()

    batches = tqdm(loader, desc=f"evaluate {split}", unit="batch", disable=not s.progress)
    scored = evaluate(model, batches, device, autocast_dtype(device, s.amp), score)
    logits, deltas = [lg for lg, _ in scored], [dl for _, dl in scored]
    counts = [len(f.proposals) for f in frames]
    k1 = len(classes) + 1
    return RoIOutputs(
        frame_ids=[f.id for f in frames], image_sizes=np.array([f.size for f in frames], np.int64).reshape(-1, 2),
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        proposals=np.concatenate([f.proposals for f in frames]).astype(np.float32).reshape(-1, 4),
        logits=torch.cat(logits).numpy() if logits else np.zeros((0, k1), np.float32),
        deltas=torch.cat(deltas).numpy() if deltas else np.zeros((0, 4 * k1), np.float32),
        classes=list(classes), split=split,
    )


def _jsonable(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def write_evaluation(out: Path, name: str, result: EvalResult, dets: dict[str, tuple], extra: dict) -> dict:
    """eval.json, ap.md, pr_curves.png and detections.npz of one evaluation; returns the eval.json content."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**extra, "classes": list(result.classes), "ap": {k: _jsonable(v) for k, v in
              result.ap_by_class().items()}, "mAP": _jsonable(result.mean_ap),
              "num_gt": dict(zip(result.classes, result.num_gt.tolist(), strict=True)),
              "iou_threshold": result.iou_threshold, "metric": "11-point" if result.use_07_metric else "all-point"}
    write_json_atomic(out / "eval.json", report)
    write_text_atomic(out / "ap.md", ap_table_markdown({name: result}))
    save_pr_curves(result, out / "pr_curves.png")
    ids = list(dets)
    np.savez_compressed(
        out / "detections.npz", frame_ids=np.array(ids),
        offsets=np.concatenate([[0], np.cumsum([len(dets[i][0]) for i in ids])]).astype(np.int64),
        boxes=np.concatenate([dets[i][0] for i in ids]).reshape(-1, 4) if ids else np.zeros((0, 4), np.float32),
        scores=np.concatenate([dets[i][1] for i in ids]) if ids else np.zeros(0, np.float32),
        labels=np.concatenate([dets[i][2] for i in ids]) if ids else np.zeros(0, np.int64),
    )
    return report


def _fusion_inputs(run_dir_a: str | Path, run_dir_b: str | Path, manifest: str | Path | Manifest,
                   split: str | None) -> tuple[RoIOutputs, RoIOutputs, str, dict]:
    """Both runs' RoI outputs, checked to be fusable on ``split``, with the split's ground truth."""
    a, b = RoIOutputs.load(Path(run_dir_a) / ROI_OUTPUTS), RoIOutputs.load(Path(run_dir_b) / ROI_OUTPUTS)
    split = split or a.split
    for name, o in (("a", a), ("b", b)):
        if o.split != split:
            raise DataError(f"run {name} ({run_dir_a if name == 'a' else run_dir_b}) was evaluated on split "
                            f"{o.split!r}, fusion asked for {split!r}")
    if a.frame_ids != b.frame_ids or a.classes != b.classes:
        raise DataError(f"{run_dir_a} and {run_dir_b} scored different frames or classes "
                        f"({len(a.frame_ids)} vs {len(b.frame_ids)} frames)")
    if not (np.array_equal(a.offsets, b.offsets) and np.array_equal(a.proposals, b.proposals)):
        raise DataError(f"{run_dir_a} and {run_dir_b} scored different proposals; late fusion needs both "
                        "detectors evaluated with the same --proposals (and --max-proposals)")
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    if list(m.classes) != a.classes:
        raise DataError(f"{m.source} lists classes {m.classes}, the detectors were trained on {a.classes}")
    gt = split_ground_truth(m, split)
    scored = set(a.frame_ids)
    missing = [f for f in gt if f not in scored]
    if missing:
        raise DataError(f"{len(missing)} labelled frame(s) of {split!r} were not scored by the detectors, e.g. "
                        f"{missing[:3]}")
    return a, b, split, gt


def _fused_detections(a: RoIOutputs, b: RoIOutputs, weight: float, score_thresh: float, nms_thresh: float,
                      max_detections: int) -> dict[str, tuple]:
    logits, deltas = fuse_outputs(torch.from_numpy(a.logits), torch.from_numpy(a.deltas),
                                  torch.from_numpy(b.logits), torch.from_numpy(b.deltas), weight)
    return a.detections(logits.numpy(), deltas.numpy(), score_thresh=score_thresh, nms_thresh=nms_thresh,
                        max_detections=max_detections)


def evaluate_fused(
    run_dir_a: str | Path,
    run_dir_b: str | Path,
    manifest: str | Path | Manifest,
    split: str | None = None,
    *,
    weight: float = 0.5,
    score_thresh: float = 1e-3,
    nms_thresh: float = 0.3,
    max_detections: int = 100,
    out: str | Path | None = None,
) -> EvalResult:
    """Late fusion of two evaluated detectors (e.g. RGB + HHA) on the same proposals, VOC AP on ``split``.

    Logits and deltas of ``roi_outputs.npz`` are averaged (:func:`student_trainer.fusion.fuse_outputs`, weight
    of a), then decoded, thresholded and NMS'd like a single detector's outputs.

    Args:
        run_dir_a, run_dir_b: run folders of ``student-trainer detect`` (holding ``roi_outputs.npz``).
        manifest: the manifest (path or object) whose ``split`` gives the ground truth.
        split: evaluated split (default: the split both runs were evaluated on).
        weight: weight of detector a (0.5 in the paper).
        score_thresh, nms_thresh, max_detections: post-processing, as in ``DetectSettings``.
        out: folder to write eval.json, ap.md, pr_curves.png and detections.npz of the fusion into.

    Raises:
        DataError: the runs scored different frames, proposals or classes, or another split than ``split``.
        FileNotFoundError: a run folder without ``roi_outputs.npz``.
    """
    a, b, split, gt = _fusion_inputs(run_dir_a, run_dir_b, manifest, split)
    dets = _fused_detections(a, b, weight, score_thresh, nms_thresh, max_detections)
    result = evaluate_detections(dets, gt, a.classes)
    if out is not None:
        write_evaluation(Path(out), "fusion", result, dets, {"split": split, "frames": len(gt), "weight": weight,
                                                              "runs": [str(run_dir_a), str(run_dir_b)]})
    return result


def fused_map_by_weight(
    run_dir_a: str | Path,
    run_dir_b: str | Path,
    manifest: str | Path | Manifest,
    split: str | None,
    weights: Sequence[float],
    *,
    score_thresh: float = 1e-3,
    nms_thresh: float = 0.3,
    max_detections: int = 100,
) -> dict[float, float]:
    """``{weight: mAP}`` of :func:`evaluate_fused` at each weight of a, reading and checking both runs once."""
    a, b, split, gt = _fusion_inputs(run_dir_a, run_dir_b, manifest, split)
    return {w: evaluate_detections(_fused_detections(a, b, w, score_thresh, nms_thresh, max_detections), gt,
                                   a.classes).mean_ap for w in weights}
