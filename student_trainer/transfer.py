"""Supervision transfer: regress the teacher's cached pool5 maps from the paired modality.

Loss: squared L2 between ``t(student_pool5(I_d))`` and ``scale * teacher_pool5(I_rgb)``, averaged over
elements; ``scale`` (default ``1 / RMS`` of the teacher maps, from the store's statistics) makes the
targets unit-RMS whatever the teacher, which the paper needed for VGG -> AlexNet.

Under ``torchrun`` every rank trains a DistributedDataParallel replica on its share of each step's batch
(``batch_size`` is the global batch, split evenly), fetching only its own frames' targets; gradients are
averaged over ranks, so a step equals the one-process step on the whole batch (BatchNorm statistics aside:
SyncBatchNorm on CUDA, per-rank statistics on CPU where PyTorch has no SyncBatchNorm). Rank 0 alone writes
the checkpoint, metrics (averaged over ranks) and summary; every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from shared.atomic import write_json_atomic
from shared.client import TeacherClient
from shared.device import autocast_dtype
from shared.distributed import ONE_PROCESS, Ranks, mean_over_ranks, process_group, rank_device, ranks_from_env
from shared.errors import ConfigError
from shared.manifest import FrameRecord, Manifest, read_manifest
from shared.modalities import Modality, modality
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.checkpoint import git_revision, load_checkpoint, save_checkpoint
from student_trainer.engine import StepResult, TrainLoop, evaluate, optimizer_step, rng_state
from student_trainer.logs import MetricsLog, check_same_run, write_run_config
from student_trainer.optim import make_optimizer
from student_trainer.student import TransferModel, copy_rgb_weights, student_spec_for, target_geometry
from student_trainer.transfer_data import BatchSchedule, TransferBatches
from student_trainer.transfer_settings import TransferSettings

__all__ = ["TransferRun", "batch_metrics", "build_transfer", "held_out_metrics", "run_transfer", "train_step",
           "transfer_loss"]

log = logging.getLogger(__name__)


def batch_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Cosine similarity (mean over frames) and the fraction of target variance left unexplained."""
    p, t = pred.detach().float().flatten(1), target.detach().float().flatten(1)
    cos = F.cosine_similarity(p, t, dim=1, eps=1e-8).mean().item()
    residual = ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum().clamp_min(1e-12)
    return {"cosine": cos, "residual": residual.item()}


@dataclass
class TransferRun:
    """Everything a training loop needs, built and validated before the first step."""

    settings: TransferSettings
    model: TransferModel
    dataset: TransferBatches
    scale: float
    teacher: dict[str, Any]
    input_hw: tuple[int, int]
    held_out: TransferBatches | None = None


def _client_factory(s: TransferSettings):
    token = s.teacher_token.get_secret_value() if s.teacher_token else None
    return lambda: TeacherClient(s.teacher_url, token=token, cache_dir=s.cache_dir, wait=s.teacher_wait,
                                 max_backoff=s.teacher_backoff_max)


def _frames_of(s: TransferSettings, manifest: Manifest, mod: Modality, splits: list[str]) -> list[FrameRecord]:
    """The frames of ``splits`` that have the modality's image (a frame with its source but no image is a
    mismatch: run the encoder)."""
    frames = manifest.split(*splits)
    source = mod.encoded_from
    if source and (unencoded := [f.id for f in frames if getattr(f, source) and not mod.image_path(f)]):
        raise ConfigError(f"{s.manifest}: {len(unencoded)} frames have a {source} image but no {mod.name} image, "
                          f"e.g. {unencoded[0]!r} (run `xmodal-data encode --manifest {s.manifest}`)")
    frames = [f for f in frames if mod.image_path(f)]
    if not frames:
        raise ConfigError(f"{s.manifest}: no frames with a {mod.name} image in splits {splits} "
                          "(run `xmodal-data encode` first?)")
    return frames


def _check_exact_flips(s: TransferSettings, mod: Modality, frames: list[FrameRecord], views: list[str]) -> None:
    if s.flip != "exact":
        return
    if "mirror" not in views:
        raise ConfigError("--flip exact needs the teacher's maps of the mirrored frames, and the teacher store has "
                          "no 'mirror' view: precompute with --views identity mirror (the default), or train with "
                          "--flip mirrored")
    if mod.mirror_field and (lacking := [f.id for f in frames if not getattr(f, mod.mirror_field)]):
        raise ConfigError(f"{s.manifest}: {len(lacking)} frames have no {mod.mirror_field} image (the {mod.name} "
                          f"image of the mirrored inputs), e.g. {lacking[0]!r}: run `xmodal-data encode --manifest "
                          f"{s.manifest}`, or train with --flip mirrored")


def _batches(s: TransferSettings, manifest: Manifest, mod: Modality, frames: list[FrameRecord],
             schedule: BatchSchedule, steps: int, first: int, input_hw: tuple[int, int], ranks: Ranks,
             flip: str) -> TransferBatches:
    mirrored = [manifest.path(p) if (p := mod.image_path(f, mirrored=True)) != mod.image_path(f) else None
                for f in frames] if flip == "exact" else None
    return TransferBatches([f.id for f in frames], [manifest.path(mod.image_path(f)) for f in frames], mod,
                           schedule, steps, first, input_hw, _client_factory(s), ranks, flip=flip,
                           mirrored_paths=mirrored)


def build_transfer(s: TransferSettings, first_step: int = 0, ranks: Ranks = ONE_PROCESS) -> TransferRun:
    """Resolve data, teacher geometry and the student; fail with a clear error before any training."""
    if s.batch_size % ranks.world_size:
        raise ConfigError(f"--batch-size {s.batch_size} is the global batch and must split evenly over the "
                          f"{ranks.world_size} torchrun ranks")
    manifest = read_manifest(s.manifest)
    mod = modality(s.modality)
    frames = _frames_of(s, manifest, mod, s.default_splits())
    with _client_factory(s)() as client:
        info = client.info()
    shape, input_hw, stats, views = target_geometry(info, manifest.header.dataset)
    _check_exact_flips(s, mod, frames, views)
    spec = student_spec_for(trunk_spec(s.trunk, **s.trunk_overrides()), input_hw, shape[1:])
    torch.manual_seed(s.seed)
    trunk = AlexNetTrunk(spec, in_channels=3)
    if s.init == "copy-rgb":
        copy_rgb_weights(trunk, s.rgb_checkpoint)  # type: ignore[arg-type]
    model = TransferModel(trunk, shape[0])
    rms = (stats.rms_l2_norm or 0.0) / math.sqrt(math.prod(shape))
    if s.target_scale is None and not rms > 0:
        raise ConfigError("the teacher store has no feature statistics yet; pass --target-scale")
    scale = s.target_scale or 1.0 / rms
    schedule = BatchSchedule(len(frames), s.batch_size, s.seed, s.flip != "none")
    dataset = _batches(s, manifest, mod, frames, schedule, s.iterations, first_step, input_hw, ranks, s.flip)
    held_out = None
    if s.eval_splits:
        held = _frames_of(s, manifest, mod, s.eval_splits)
        held_out = _batches(s, manifest, mod, held, BatchSchedule(len(held), 1, 0, False), 0, 0, input_hw,
                            ONE_PROCESS, "none")
    teacher = info.teacher.model_dump() | {"id": info.teacher_id}
    return TransferRun(s, model, dataset, scale, teacher, input_hw, held_out)


def transfer_loss(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of a batch (moved to ``device``, NHWC) and the squared-L2 loss to ``target`` (already scaled).
    Returns pred, target (on the device), loss."""
    x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
    target = target.to(device, non_blocking=True)
    pred = model(x)
    return pred, target, F.mse_loss(pred.float(), target)


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step outside the engine (the benches' loops): :func:`transfer_loss`, then the engine's optimiser
    step. Returns pred, target, loss."""
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        pred, target, loss = transfer_loss(model, x, target, device)
    optimizer_step(opt, scaler, loss)
    return pred, target, loss


def held_out_metrics(model: TransferModel, data: TransferBatches, scale: float, device: torch.device,
                     amp_dtype: torch.dtype | None, batch: int = 64) -> dict[str, float]:
    """Residual (the fraction of the held-out targets' variance around their global mean left unexplained) and
    mean cosine to the teacher over every frame of ``data`` (eval mode, no flips, targets scaled as in training)."""
    targets = data.source().get_many(data.ids) * scale
    chunks = [range(i, min(i + batch, len(data.ids))) for i in range(0, len(data.ids), batch)]

    def predict(m: torch.nn.Module, rows: range) -> np.ndarray:
        x = torch.stack([data.load_input(k, False) for k in rows]).to(device, memory_format=torch.channels_last)
        return m(x).float().cpu().numpy()

    pred = np.concatenate(evaluate(model, chunks, device, amp_dtype, predict)).astype(np.float64)
    t = targets.astype(np.float64)
    p_flat, t_flat = pred.reshape(len(t), -1), t.reshape(len(t), -1)
    cos = (p_flat * t_flat).sum(1) / (np.linalg.norm(p_flat, axis=1) * np.linalg.norm(t_flat, axis=1) + 1e-12)
    return {"residual": float(((pred - t) ** 2).sum() / ((t - t.mean()) ** 2).sum()), "cosine": float(cos.mean()),
            "frames": len(t)}


def _checkpoint(run: TransferRun, opt, sched, step: int, device: torch.device, git: str) -> dict[str, Any]:
    mod = modality(run.settings.modality)
    return {
        "model": run.model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": step, "rng": rng_state(device), "config": json.loads(run.settings.model_dump_json()),
        "teacher": run.teacher, "target_scale": run.scale, "input_size": list(run.input_hw), "git": git,
        "trunk": run.model.trunk.describe(mod.mean, mod.std), "modality": run.settings.modality,
    }


def run_transfer(s: TransferSettings) -> dict[str, Any]:
    """Train (or resume) a student, as one process or as one torchrun rank; returns the summary (rank 0 also
    writes it to ``<out>/summary.json``)."""
    ranks = ranks_from_env()
    device = rank_device(s.device, ranks)
    with process_group(device, ranks):
        return _train(s, ranks, device)


def _replicate(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The module the loop steps: ``model`` itself for one process, else its DDP replica (BatchNorm statistics
    synchronised over the global batch on CUDA)."""
    if not ranks.distributed:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the top module
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _train(s: TransferSettings, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    ckpt_path = s.out / "checkpoint.pt"
    if s.resume:
        check_same_run(s, "a student", resume=True)
    state = load_checkpoint(ckpt_path) if s.resume and ckpt_path.is_file() else None
    first = int(state["step"]) if state else 0
    run = build_transfer(s, first_step=first, ranks=ranks)
    if state and state["teacher"]["id"] != run.teacher["id"]:
        raise ConfigError(f"{ckpt_path} was trained against teacher {state['teacher']['id']}, "
                          f"the service now serves {run.teacher['id']}")
    # NHWC on CPU too: 1.06-1.23x faster student steps there (bench/cpu_layout.py)
    model = run.model.to(device, memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, s, state)
    net = _replicate(model, ranks, device)
    main, git, amp = ranks.is_main, git_revision(), autocast_dtype(device, s.amp)
    if main:
        write_run_config(s.out, {"settings": json.loads(s.model_dump_json()), "teacher": run.teacher,
                                 "target_scale": run.scale, "trunk": model.trunk.spec.model_dump(),
                                 "world_size": ranks.world_size})
    metrics = MetricsLog(s.out / "metrics.jsonl", resume_step=first if state else None) if main else None

    def step_fn(batch: list[torch.Tensor], step: int) -> StepResult:
        x, target = batch
        pred, target, loss = transfer_loss(net, x, target * run.scale, device)
        return StepResult(loss, batch_metrics(pred, target))

    def save(step: int) -> None:
        if main:
            save_checkpoint(ckpt_path, _checkpoint(run, opt, sched, step, device, git))

    loop = TrainLoop(net, opt, sched, step_fn, device, amp, save=save,
                     log=lambda record: metrics.write(record) if metrics else None, log_every=s.log_every,
                     checkpoint_every=s.checkpoint_every, reduce=mean_over_ranks, desc=f"transfer {s.modality}",
                     progress=s.progress and main, postfix=("loss", "cosine", "wait_fraction"))
    loader = DataLoader(run.dataset, batch_size=None, num_workers=s.loader_workers, pin_memory=device.type == "cuda",
                        prefetch_factor=s.prefetch if s.loader_workers else None)
    last = loop.run(loader, first, s.iterations, resume_rng=state.get("rng") if state else None)
    summary: dict[str, Any] = {"modality": s.modality, "init": s.init, "iterations": s.iterations,
                               "teacher": run.teacher["id"], "target_scale": run.scale, "flip": s.flip,
                               "final": last, "frames": len(run.dataset.ids)}
    if run.held_out is not None:
        summary["held_out"] = {"splits": s.eval_splits, **held_out_metrics(model, run.held_out, run.scale, device,
                                                                            amp)}
    if main:
        if metrics:
            metrics.close()
        if s.iterations == 0 or first >= s.iterations:
            save(max(first, s.iterations))
        write_json_atomic(s.out / "summary.json", summary)  # its existence means "done" to compare and the demo
    return summary
