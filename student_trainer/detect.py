"""Train and evaluate a Fast R-CNN detector for one modality, from one of the paper's trunk initialisations.

Inits: ``random`` (no init: trunk spec from the flags), ``copy-rgb`` (the RGB checkpoint's trunk weights copied
by :func:`student_trainer.student.copy_rgb_weights`) and ``transfer`` (a supervision-transfer student's trunk);
everything is fine-tuned, or with ``--freeze-trunk`` only the fc layers learn (the trunk keeps its weights and
BatchNorm statistics: how much the init alone carries). ``transfer-frozen`` is ``transfer --freeze-trunk``. The
trunk spec of the non-random inits comes from the checkpoint's ``trunk`` description.

A run folder holds ``config.json``, ``metrics.jsonl`` (JSON lines), ``checkpoint.pt`` (atomic, resumable with
``--resume``; its ``trunk.*`` keys and ``trunk`` description make it loadable as a teacher), then the evaluation
on the test split (``student_trainer.detect_eval``): ``eval.json`` (VOC all-point AP per class and mean),
``ap.md``, ``pr_curves.png``, ``detections.npz`` (``frame_ids``, ``offsets`` (F + 1,), ``boxes``, ``scores``,
``labels`` 0-based, frame pixels), ``roi_outputs.npz`` (raw per-RoI outputs, for late fusion) and
``summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from shared.atomic import write_json_atomic
from shared.device import autocast_dtype, select_device
from shared.errors import ConfigError
from shared.manifest import Manifest, read_manifest
from shared.modalities import Modality, modality
from shared.nets.teachers import trunk_state
from shared.nets.trunks import AlexNetTrunk, TrunkSpec, trunk_spec
from student_trainer.checkpoint import git_revision, load_checkpoint, save_checkpoint
from student_trainer.detect_data import DetectFrame, TrainBatches, detect_frames, ground_truth
from student_trainer.detect_eval import ROI_OUTPUTS, score_frames, write_evaluation
from student_trainer.detect_settings import DetectSettings
from student_trainer.detector import FastRCNN, fast_rcnn_loss, sample_rois
from student_trainer.engine import StepResult, TrainLoop, rng_state
from student_trainer.logs import MetricsLog, check_same_run, read_metrics, write_run_config
from student_trainer.optim import make_optimizer
from student_trainer.proposals import default_cache_path, generate_proposals, load_proposals
from student_trainer.student import copy_rgb_weights
from student_trainer.transfer_data import BatchSchedule
from student_trainer.voc_eval import evaluate_detections

__all__ = ["DetectRun", "build_detect", "detect_once", "evaluate_run_on", "run_detect", "run_settings",
           "split_eval_dir"]

log = logging.getLogger(__name__)


@dataclass
class DetectRun:
    """Everything training and evaluation need, built and validated before the first step."""

    settings: DetectSettings
    manifest: Manifest
    modality: Modality
    model: FastRCNN
    train_frames: list[DetectFrame]
    test_frames: list[DetectFrame]
    init: dict[str, Any]
    git: str  # asked once per run, not at every checkpoint


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
        return AlexNetTrunk(trunk_spec(s.trunk, **s.trunk_overrides())), {"init": "random"}
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
    if ckpt.get("modality") not in (None, s.modality):  # transfer / transfer-frozen
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
    mod = modality(s.modality)
    splits, test_split = s.default_train_splits(), s.default_test_split()
    props = _proposals(s, manifest, [*splits, test_split])
    train = detect_frames(manifest, splits, mod, props, s.max_proposals)
    test = detect_frames(manifest, [test_split], mod, props, s.max_proposals)
    torch.manual_seed(s.seed)
    trunk, info = _build_trunk(s)
    model = FastRCNN(trunk, len(manifest.classes), s.fc_width, s.dropout)
    if s.trunk_frozen:
        model.freeze_trunk()
    return DetectRun(s, manifest, mod, model, train, test, info, git_revision())


# ---------------------------------------------------------------- training


def _checkpoint(run: DetectRun, model: FastRCNN, opt, sched, step: int, device: torch.device) -> dict[str, Any]:
    return {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
        "rng": rng_state(device), "config": json.loads(run.settings.model_dump_json()), "git": run.git,
        "trunk": model.trunk.describe(run.modality.mean, run.modality.std), "detector": model.describe(),
        "modality": run.settings.modality, "classes": run.manifest.classes, "init": run.init,
    }


def detection_loss(model: FastRCNN, images: torch.Tensor, frames, s: DetectSettings,
                   device: torch.device) -> StepResult:
    """Sample RoIs, forward, Fast R-CNN loss; with its parts for logging."""
    images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
    rois, labels, targets = sample_rois(
        [f.proposals.to(device) for f in frames], [f.boxes.to(device) for f in frames],
        [f.labels.to(device) for f in frames], s.rois_per_image, s.fg_fraction, s.fg_iou,
    )
    logits, deltas = model(images, rois)
    loss_cls, loss_box = fast_rcnn_loss(logits, deltas, labels, targets, s.box_loss_beta)
    acc = (logits.detach().argmax(1) == labels).float().mean().item()
    return StepResult(loss_cls + loss_box, {"loss_cls": loss_cls.item(), "loss_box": loss_box.item(),
                                            "accuracy": acc, "fg_fraction": (labels > 0).float().mean().item()})


def _train(run: DetectRun, device: torch.device) -> dict[str, Any]:
    s, model = run.settings, run.model
    ckpt_path = s.out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if s.resume and ckpt_path.is_file() else None
    if state and (state.get("modality"), state.get("classes")) != (s.modality, run.manifest.classes):
        raise ConfigError(f"{ckpt_path} holds a {state.get('modality')!r} detector of classes "
                          f"{state.get('classes')}; this run is {s.modality!r} with {run.manifest.classes}")
    first = int(state["step"]) if state else 0
    opt, sched = make_optimizer(model, s, state, lr_mult={"trunk.": s.trunk_lr_mult})
    metrics = MetricsLog(s.out / "metrics.jsonl", resume_step=first if state else None)
    data = TrainBatches(run.train_frames, run.modality, BatchSchedule(len(run.train_frames), s.images_per_batch,
                        s.seed, s.flip), s.iterations, first, s.short_side, s.max_side)
    loader = DataLoader(data, batch_size=None, num_workers=s.loader_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(s.seed))  # keeps the global RNG for RoI sampling

    def step_fn(batch: list[Any], step: int) -> StepResult:
        images, frames = batch
        return detection_loss(model, images, frames, s, device)

    loop = TrainLoop(model, opt, sched, step_fn, device, autocast_dtype(device, s.amp),
                     save=lambda step: save_checkpoint(ckpt_path, _checkpoint(run, model, opt, sched, step, device)),
                     log=metrics.write, log_every=s.log_every, checkpoint_every=s.checkpoint_every,
                     desc=f"detect {s.modality} ({s.init})", progress=s.progress, postfix=("loss", "accuracy"))
    last = loop.run(loader, first, s.iterations, resume_rng=state["rng"] if state else None)
    metrics.close()
    if s.iterations == 0 or first >= s.iterations:
        save_checkpoint(ckpt_path, _checkpoint(run, model, opt, sched, max(first, s.iterations), device))
        done_before = read_metrics(s.out / "metrics.jsonl") if (s.out / "metrics.jsonl").is_file() else []
        last = done_before[-1] if done_before else {}  # a finished run, only re-evaluated
    return last


# ---------------------------------------------------------------- entry points


def _evaluate(run: DetectRun, device: torch.device, split: str, out: Path) -> dict[str, Any]:
    """Score ``run.test_frames`` (of ``split``), save their RoI outputs and the evaluation into ``out``."""
    s = run.settings
    outputs = score_frames(run.model, run.test_frames, run.modality, s, device, split, run.manifest.classes)
    out.mkdir(parents=True, exist_ok=True)
    outputs.save(out / ROI_OUTPUTS)
    dets = outputs.detections(score_thresh=s.score_thresh, nms_thresh=s.nms_thresh,
                              max_detections=s.detections_per_image)
    result = evaluate_detections(dets, ground_truth(run.test_frames), run.manifest.classes)
    return write_evaluation(out, f"{s.modality} {s.init}", result, dets,
                            {"split": split, "frames": len(run.test_frames), "modality": s.modality, "init": s.init})


def run_detect(s: DetectSettings) -> dict[str, Any]:
    """Train (or resume) a detector, evaluate it on the test split; returns the summary (also summary.json)."""
    if s.resume:
        check_same_run(s, "a detector run", resume=True)
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
    report = _evaluate(run, device, split, s.out)
    t2 = time.perf_counter()
    summary = {"modality": s.modality, "init": s.init, "trunk_frozen": s.trunk_frozen, "iterations": s.iterations,
               "train_splits": s.default_train_splits(), "test_split": split, "train_frames": len(run.train_frames),
               "test_frames": len(run.test_frames), "mAP": report["mAP"], "ap": report["ap"], "final": last,
               "train_seconds": round(t1 - t0, 2), "eval_seconds": round(t2 - t1, 2), "device": str(device)}
    write_json_atomic(s.out / "summary.json", summary)  # written last: its existence means "done" to compare
    return summary


def detect_once(s: DetectSettings) -> dict[str, Any]:
    """The summary of the finished run in ``s.out`` (only re-read: a run is deterministic given its settings), else
    :func:`run_detect` (resuming a checkpoint there). A run there made with other settings, ``iterations``
    included, is refused: what this returns stands for ``s``."""
    check_same_run(s, "a detector run")
    summary = s.out / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    return run_detect(s.model_copy(update={"resume": True}))


def run_settings(run_dir: Path, **overrides: Any) -> DetectSettings:
    """The settings a detector run in ``run_dir`` was made with (its config.json), with ``overrides``."""
    config = json.loads((run_dir / "config.json").read_text())["settings"]
    return DetectSettings.model_validate({**config, **overrides})


def split_eval_dir(run_dir: Path, split: str) -> Path:
    """Where :func:`evaluate_run_on` leaves a run's evaluation on another split than its test split."""
    return run_dir / f"eval-{split}"


def evaluate_run_on(run_dir: Path, split: str, *, device: str = "auto", progress: bool = False) -> Path:
    """Score a finished detector run on another split, e.g. a validation split where the late-fusion weight is
    chosen; no step of training is repeated.

    Writes ``roi_outputs.npz``, then ``eval.json`` and the rest of an evaluation into :func:`split_eval_dir`, and
    reuses one whose ``eval.json`` exists (its RoI outputs were saved before it). Returns that folder.

    Raises:
        ConfigError: the run is not finished (no summary.json) or the manifest has no labelled frames in ``split``.
    """
    out = split_eval_dir(run_dir, split)
    if (out / "eval.json").is_file():
        return out
    if not (run_dir / "summary.json").is_file():
        raise ConfigError(f"{run_dir} is not a finished detector run (no summary.json): train it first")
    s = run_settings(run_dir, test_split=split, device=device, progress=progress)
    run = build_detect(s)  # raises ConfigError for a split without labelled frames
    run.model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    dev = select_device(s.device)
    run.model.to(dev, memory_format=torch.channels_last)
    _evaluate(run, dev, split, out)
    return out
