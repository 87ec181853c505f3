"""Train and evaluate a Fast R-CNN detector for one modality, from one of the paper's trunk initialisations.

Inits: ``random`` (no init: trunk spec from the flags), ``copy-rgb`` (the RGB checkpoint's trunk weights copied
by :func:`student_trainer.student.copy_rgb_weights`), ``transfer`` (a supervision-transfer student's trunk,
everything fine-tuned) and ``transfer-frozen`` (same trunk, frozen with its BatchNorm statistics: only the fc
layers learn). The trunk spec of the non-random inits comes from the checkpoint's ``trunk`` description.

A run folder holds ``config.json``, ``metrics.jsonl`` (JSON lines), ``checkpoint.pt`` (atomic, resumable with
``--resume``; its ``trunk.*`` keys and ``trunk`` description make it loadable as a teacher), then the evaluation
on the test split: ``eval.json`` (VOC all-point AP per class and mean), ``ap.md``, ``pr_curves.png``,
``detections.npz`` (``frame_ids``, ``offsets`` (F + 1,), ``boxes``, ``scores``, ``labels`` 0-based, frame pixels)
and ``roi_outputs.npz`` (``frame_ids``, ``offsets``, ``proposals`` (R, 4) frame pixels, ``logits``
(R, K + 1), ``deltas`` (R, 4 (K + 1)), ``image_sizes``, ``classes``, ``split``, ``box_weights``): the raw
per-RoI outputs that :func:`evaluate_fused` combines for late fusion, and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from shared.boxes import DEFAULT_BOX_CODER_WEIGHTS
from shared.device import select_device
from shared.errors import ConfigError, DataError
from shared.manifest import Manifest, read_manifest
from shared.nets.teachers import trunk_state
from shared.nets.trunks import AlexNetTrunk, TrunkSpec, trunk_spec
from shared.presets import ModalityPreset, preset
from student_trainer.checkpoint import git_revision, load_checkpoint, save_checkpoint
from student_trainer.detect_data import (
    DetectFrame,
    EvalFrames,
    TrainBatches,
    detect_frames,
    ground_truth,
    pad_images,
    split_ground_truth,
)
from student_trainer.detect_settings import DetectSettings
from student_trainer.detector import FastRCNN, fast_rcnn_loss, postprocess_detections, sample_rois
from student_trainer.fusion import fuse_outputs
from student_trainer.logs import MetricsLog, MetricWindow, read_metrics, write_run_config
from student_trainer.optim import make_optimizer
from student_trainer.proposals import default_cache_path, generate_proposals, load_proposals
from student_trainer.student import copy_rgb_weights
from student_trainer.transfer_data import BatchSchedule
from student_trainer.voc_eval import EvalResult, ap_table_markdown, evaluate_detections, save_pr_curves

__all__ = ["ROI_OUTPUTS", "DetectRun", "RoIOutputs", "build_detect", "evaluate_fused", "run_detect", "score_frames"]

log = logging.getLogger(__name__)

ROI_OUTPUTS = "roi_outputs.npz"


@dataclass
class DetectRun:
    """Everything training and evaluation need, built and validated before the first step."""

    settings: DetectSettings
    manifest: Manifest
    preset: ModalityPreset
    model: FastRCNN
    train_frames: list[DetectFrame]
    test_frames: list[DetectFrame]
    init: dict[str, Any]
    git: str  # asked once per run, not at every checkpoint


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


# ---------------------------------------------------------------- building


def _proposals(s: DetectSettings, manifest: Manifest, splits: Sequence[str]) -> dict[str, np.ndarray]:
    """``--proposals``, else the generator's cache beside the manifest (made for ``splits`` where missing).

    The cache is shared by every detector on the manifest, so RGB and depth detectors score the same boxes
    (late fusion needs that) and proposals are computed once.
    """
    if s.proposals is not None:
        return load_proposals(s.proposals)
    cache = default_cache_path(manifest.source, s.proposal_method)
    log.info("no --proposals given: using the generator's cache %s", cache)
    generate_proposals(manifest.source, cache, method=s.proposal_method, splits=list(splits), progress=s.progress)
    return load_proposals(cache)


def _build_trunk(s: DetectSettings) -> tuple[AlexNetTrunk, dict[str, Any]]:
    if s.init == "random":
        overrides = {"width": s.width, **({"batch_norm": s.batch_norm} if s.batch_norm is not None else {})}
        return AlexNetTrunk(trunk_spec(s.trunk, **overrides)), {"init": "random"}
    path = s.trunk_checkpoint
    ckpt = load_checkpoint(path)  # type: ignore[arg-type]
    meta = ckpt.get("trunk")
    if not isinstance(meta, dict) or "spec" not in meta:
        raise ConfigError(f"{path} has no 'trunk' description; --init {s.init} needs a checkpoint written by this "
                          "project's trainers (student-trainer transfer / detect)")
    trunk = AlexNetTrunk(TrunkSpec.model_validate(meta["spec"]), in_channels=int(meta.get("in_channels", 3)))
    info = {"init": s.init, "checkpoint": str(path), "checkpoint_modality": ckpt.get("modality"),
            "checkpoint_step": ckpt.get("step")}
    if s.init == "copy-rgb":
        info["copied_tensors"] = copy_rgb_weights(trunk, path)  # type: ignore[arg-type]
        return trunk, info
    if ckpt.get("modality") not in (None, s.modality):
        raise ConfigError(f"--init {s.init}: {path} is a {ckpt['modality']!r} trunk, the detector's modality is "
                          f"{s.modality!r}")
    missing, _ = trunk.load_state_dict(trunk_state(ckpt, path), strict=False)  # type: ignore[arg-type]
    if missing:
        raise ConfigError(f"{path} lacks trunk weights {missing[:4]} of the spec it describes")
    return trunk, info


def build_detect(s: DetectSettings) -> DetectRun:
    """Resolve frames, proposals and the model; fail with a clear error before any training."""
    manifest = read_manifest(s.manifest)
    if not manifest.classes:
        raise ConfigError(f"{s.manifest}: the header lists no classes")
    mod = preset(s.modality)
    splits, test_split = s.default_train_splits(), s.default_test_split()
    props = _proposals(s, manifest, [*splits, test_split])
    train = detect_frames(manifest, splits, mod, props, s.max_proposals)
    test = detect_frames(manifest, [test_split], mod, props, s.max_proposals)
    torch.manual_seed(s.seed)
    trunk, info = _build_trunk(s)
    model = FastRCNN(trunk, len(manifest.classes), s.fc_width, s.dropout)
    if s.init == "transfer-frozen":
        model.freeze_trunk()
    return DetectRun(s, manifest, mod, model, train, test, info, git_revision())


# ---------------------------------------------------------------- training


def _checkpoint(run: DetectRun, model: FastRCNN, opt, sched, step: int, device: torch.device) -> dict[str, Any]:
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
        "rng": rng, "config": json.loads(run.settings.model_dump_json()), "git": run.git,
        "trunk": model.trunk.describe(run.preset.mean, run.preset.std), "detector": model.describe(),
        "modality": run.settings.modality, "classes": run.manifest.classes, "init": run.init,
    }


def _train_step(model: FastRCNN, images: torch.Tensor, frames, s: DetectSettings, device: torch.device,
                use_amp: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Sample RoIs, forward, loss. Returns the total loss and its parts for logging."""
    rois, labels, targets = sample_rois(
        [f.proposals.to(device) for f in frames], [f.boxes.to(device) for f in frames],
        [f.labels.to(device) for f in frames], s.rois_per_image, s.fg_fraction, s.fg_iou,
    )
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        logits, deltas = model(images, rois)
    loss_cls, loss_box = fast_rcnn_loss(logits, deltas, labels, targets, s.box_loss_beta)
    acc = (logits.detach().argmax(1) == labels).float().mean().item()
    return loss_cls + loss_box, {"loss_cls": loss_cls.item(), "loss_box": loss_box.item(), "accuracy": acc,
                                 "fg_fraction": (labels > 0).float().mean().item()}


def _train(run: DetectRun, device: torch.device) -> dict[str, Any]:
    s, model = run.settings, run.model
    ckpt_path = s.out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if s.resume and ckpt_path.is_file() else None
    if state and (state.get("modality"), state.get("classes")) != (s.modality, run.manifest.classes):
        raise ConfigError(f"{ckpt_path} holds a {state.get('modality')!r} detector of classes "
                          f"{state.get('classes')}; this run is {s.modality!r} with {run.manifest.classes}")
    first = int(state["step"]) if state else 0
    opt, sched = make_optimizer(model, s, state)
    metrics = MetricsLog(s.out / "metrics.jsonl", resume_step=first if state else None)
    use_amp = s.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=use_amp)
    data = TrainBatches(run.train_frames, run.preset, BatchSchedule(len(run.train_frames), s.images_per_batch,
                        s.seed, s.flip), s.iterations, first, s.short_side, s.max_side)
    loader = DataLoader(data, batch_size=None, num_workers=s.loader_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(s.seed))  # keeps the global RNG for RoI sampling
    it = iter(loader)
    if state:  # after the loader started: the RoI sampling and dropout of a resumed run repeat the original's
        torch.set_rng_state(state["rng"]["cpu"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    bar = tqdm(total=s.iterations, initial=first, desc=f"detect {s.modality} ({s.init})", unit="step",
               disable=not s.progress)
    window, last = MetricWindow(), {}
    model.train()
    t_prev = time.perf_counter()
    for step in range(first, s.iterations):
        # fetch
        images, frames, got_step = next(it)
        t_ready = time.perf_counter()
        if got_step != step:
            raise RuntimeError(f"data for step {got_step} arrived at step {step}")
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        # forward
        loss, parts = _train_step(model, images, frames, s, device, use_amp)
        if not use_amp and not math.isfinite(loss.item()):  # under AMP, GradScaler skips overflowing steps
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --lr (now {s.lr})")
        # backward + step
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        # log
        now = time.perf_counter()
        window.add({"loss": loss.item(), **parts}, t_ready - t_prev, now - t_prev)
        t_prev = now
        bar.update()
        done = step + 1
        if done % s.log_every == 0 or done == s.iterations:
            last = window.report(step=done, lr=sched.get_last_lr()[0])
            metrics.write(last)
            bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.2f}")
        # checkpoint
        if done % s.checkpoint_every == 0 or done == s.iterations:
            save_checkpoint(ckpt_path, _checkpoint(run, model, opt, sched, done, device))
    bar.close()
    metrics.close()
    if s.iterations == 0 or first >= s.iterations:
        save_checkpoint(ckpt_path, _checkpoint(run, model, opt, sched, max(first, s.iterations), device))
        done_before = read_metrics(s.out / "metrics.jsonl") if (s.out / "metrics.jsonl").is_file() else []
        last = done_before[-1] if done_before else {}  # a finished run, only re-evaluated
    return last


# ---------------------------------------------------------------- evaluation


def score_frames(model: FastRCNN, frames: Sequence[DetectFrame], mod: ModalityPreset, s: DetectSettings,
                 device: torch.device, split: str, classes: Sequence[str]) -> RoIOutputs:
    """Logits and deltas of every proposal of every frame (model in eval mode, no flips)."""
    model.eval()
    use_amp = s.amp and device.type == "cuda"
    loader = DataLoader(EvalFrames(frames, mod, s.short_side, s.max_side), batch_size=s.eval_batch_size,
                        collate_fn=list, num_workers=s.loader_workers)
    logits, deltas = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=f"evaluate {split}", unit="batch", disable=not s.progress):
            images = pad_images([f.image for f in batch]).to(device, memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                lg, dl = model(images, [f.proposals.to(device) for f in batch])
            logits.append(lg.float().cpu())
            deltas.append(dl.float().cpu())
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


def _write_evaluation(out: Path, name: str, result: EvalResult, dets: dict[str, tuple], extra: dict) -> dict:
    """eval.json, ap.md, pr_curves.png and detections.npz of one evaluation; returns the eval.json content."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**extra, "classes": list(result.classes), "ap": {k: _jsonable(v) for k, v in
              result.ap_by_class().items()}, "mAP": _jsonable(result.mean_ap),
              "num_gt": dict(zip(result.classes, result.num_gt.tolist(), strict=True)),
              "iou_threshold": result.iou_threshold, "metric": "11-point" if result.use_07_metric else "all-point"}
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ap.md").write_text(ap_table_markdown({name: result}))
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


# ---------------------------------------------------------------- entry points


def run_detect(s: DetectSettings) -> dict[str, Any]:
    """Train (or resume) a detector, evaluate it on the test split; returns the summary (also summary.json)."""
    run = build_detect(s)
    device = select_device(s.device)
    # NHWC on CPU too: one code path, and no slower there (bench/cpu_layout.py)
    run.model.to(device, memory_format=torch.channels_last)
    write_run_config(s.out, {"settings": json.loads(s.model_dump_json()), "init": run.init,
                             "trunk": run.model.trunk.spec.model_dump(), "detector": run.model.describe(),
                             "train_frames": len(run.train_frames), "test_frames": len(run.test_frames)})
    t0 = time.perf_counter()
    last = _train(run, device)
    t1 = time.perf_counter()
    split = s.default_test_split()
    outputs = score_frames(run.model, run.test_frames, run.preset, s, device, split, run.manifest.classes)
    outputs.save(s.out / ROI_OUTPUTS)
    dets = outputs.detections(score_thresh=s.score_thresh, nms_thresh=s.nms_thresh,
                              max_detections=s.detections_per_image)
    result = evaluate_detections(dets, ground_truth(run.test_frames), run.manifest.classes)
    report = _write_evaluation(s.out, f"{s.modality} {s.init}", result, dets,
                               {"split": split, "frames": len(run.test_frames), "modality": s.modality,
                                "init": s.init})
    t2 = time.perf_counter()
    summary = {"modality": s.modality, "init": s.init, "iterations": s.iterations,
               "train_splits": s.default_train_splits(), "test_split": split, "train_frames": len(run.train_frames),
               "test_frames": len(run.test_frames), "mAP": report["mAP"], "ap": report["ap"], "final": last,
               "train_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2), "device": str(device)}
    (s.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
    logits, deltas = fuse_outputs(torch.from_numpy(a.logits), torch.from_numpy(a.deltas),
                                  torch.from_numpy(b.logits), torch.from_numpy(b.deltas), weight)
    dets = a.detections(logits.numpy(), deltas.numpy(), score_thresh=score_thresh, nms_thresh=nms_thresh,
                        max_detections=max_detections)
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    if list(m.classes) != a.classes:
        raise DataError(f"{m.source} lists classes {m.classes}, the detectors were trained on {a.classes}")
    gt = split_ground_truth(m, split)
    missing = [f for f in gt if f not in dets]
    if missing:
        raise DataError(f"{len(missing)} labelled frame(s) of {split!r} were not scored by the detectors, e.g. "
                        f"{missing[:3]}")
    result = evaluate_detections(dets, gt, a.classes)
    if out is not None:
        _write_evaluation(Path(out), "fusion", result, dets, {"split": split, "frames": len(gt), "weight": weight,
                                                              "runs": [str(run_dir_a), str(run_dir_b)]})
    return result
