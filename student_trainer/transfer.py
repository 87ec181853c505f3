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
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from shared.atomic import write_json_atomic
from shared.client import TeacherClient
from shared.distributed import ONE_PROCESS, Ranks, mean_over_ranks, process_group, rank_device, ranks_from_env
from shared.errors import ConfigError
from shared.manifest import read_manifest
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from shared.presets import preset
from student_trainer.checkpoint import git_revision, load_checkpoint, save_checkpoint
from student_trainer.logs import MetricsLog, MetricWindow, write_run_config
from student_trainer.optim import make_optimizer
from student_trainer.settings import TransferSettings
from student_trainer.student import TransferModel, copy_rgb_weights, student_spec_for, target_geometry
from student_trainer.transfer_data import BatchSchedule, TransferBatches, unwrap_failure

__all__ = ["TransferRun", "batch_metrics", "build_transfer", "run_transfer", "train_step"]

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


# The manifest field each student modality is encoded from: a frame with it but no encoded image is a mismatch.
_ENCODED_FROM = {"hha": "depth", "flow": "rgb_next"}


def _client_factory(s: TransferSettings):
    token = s.teacher_token.get_secret_value() if s.teacher_token else None
    return lambda: TeacherClient(s.teacher_url, token=token, cache_dir=s.cache_dir, wait=s.teacher_wait,
                                 max_backoff=s.teacher_backoff_max)


def build_transfer(s: TransferSettings, first_step: int = 0, ranks: Ranks = ONE_PROCESS) -> TransferRun:
    """Resolve data, teacher geometry and the student; fail with a clear error before any training."""
    if s.batch_size % ranks.world_size:
        raise ConfigError(f"--batch-size {s.batch_size} is the global batch and must split evenly over the "
                          f"{ranks.world_size} torchrun ranks")
    manifest = read_manifest(s.manifest)
    mod = preset(s.modality)
    frames = manifest.split(*s.default_splits())
    source = _ENCODED_FROM[s.modality]
    if unencoded := [f.id for f in frames if getattr(f, source) and not getattr(f, mod.manifest_field)]:
        raise ConfigError(f"{s.manifest}: {len(unencoded)} frames have a {source} image but no {s.modality} image, "
                          f"e.g. {unencoded[0]!r} (run `xmodal-data encode --manifest {s.manifest}`)")
    frames = [f for f in frames if getattr(f, mod.manifest_field)]
    if not frames:
        raise ConfigError(f"{s.manifest}: no frames with a {s.modality} image in splits {s.default_splits()} "
                          "(run `xmodal-data encode` first?)")
    with _client_factory(s)() as client:
        info = client.info()
    shape, input_hw, stats = target_geometry(info, manifest.header.dataset)
    base = trunk_spec(s.trunk, width=s.width, **({"batch_norm": s.batch_norm} if s.batch_norm is not None else {}))
    spec = student_spec_for(base, input_hw, shape[1:])
    torch.manual_seed(s.seed)
    trunk = AlexNetTrunk(spec, in_channels=3)
    if s.init == "copy-rgb":
        copy_rgb_weights(trunk, s.rgb_checkpoint)  # type: ignore[arg-type]
    model = TransferModel(trunk, shape[0])
    rms = stats.get("rms_l2_norm", 0.0) / math.sqrt(math.prod(shape))
    if s.target_scale is None and not rms > 0:
        raise ConfigError("the teacher store has no feature statistics yet; pass --target-scale")
    scale = s.target_scale or 1.0 / rms
    schedule = BatchSchedule(len(frames), s.batch_size, s.seed, s.flip)
    dataset = TransferBatches(
        [f.id for f in frames], [manifest.path(getattr(f, mod.manifest_field)) for f in frames], mod, schedule,
        s.iterations, first_step, input_hw, _client_factory(s), ranks,
    )
    return TransferRun(s, model, dataset, scale, info["teacher"] | {"id": info["teacher_id"]}, input_hw)


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step on a batch (moved to ``device``; AMP when the scaler is enabled). Returns pred, target, loss."""
    x = x.to(device, non_blocking=True)
    target = target.to(device, non_blocking=True)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
        pred = model(x)
    loss = F.mse_loss(pred.float(), target)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return pred, target, loss


def _checkpoint(run: TransferRun, opt, sched, step: int) -> dict[str, Any]:
    mod = preset(run.settings.modality)
    return {
        "model": run.model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": step, "config": json.loads(run.settings.model_dump_json()), "teacher": run.teacher,
        "target_scale": run.scale, "input_size": list(run.input_hw), "git": git_revision(),
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
    main = ranks.is_main
    if main:
        write_run_config(s.out, {"settings": json.loads(s.model_dump_json()), "teacher": run.teacher,
                                 "target_scale": run.scale, "trunk": model.trunk.spec.model_dump(),
                                 "world_size": ranks.world_size})
    metrics = MetricsLog(s.out / "metrics.jsonl", resume_step=first if state else None) if main else None
    scaler = torch.amp.GradScaler(enabled=s.amp and device.type == "cuda")
    loader = DataLoader(run.dataset, batch_size=None, num_workers=s.loader_workers, pin_memory=device.type == "cuda",
                        prefetch_factor=s.prefetch if s.loader_workers else None)
    bar = tqdm(total=s.iterations, initial=first, desc=f"transfer {s.modality}", unit="step",
               disable=not (s.progress and main))
    window, last = MetricWindow(), {}
    net.train()
    it, t_prev = iter(loader), time.perf_counter()
    for step in range(first, s.iterations):
        # fetch: waits only when the prefetching workers fall behind
        x, target, got_step = unwrap_failure(next(it))
        t_ready = time.perf_counter()
        if got_step != step:
            raise RuntimeError(f"data for step {got_step} arrived at step {step}")
        # forward, backward (gradients averaged over ranks), step
        pred, target, loss = train_step(net, opt, scaler, x, target * run.scale, device)
        sched.step()
        # log
        now = time.perf_counter()
        window.add({"loss": loss.item(), **batch_metrics(pred, target)}, t_ready - t_prev, now - t_prev)
        t_prev = now
        bar.update()
        done = step + 1
        if done % s.log_every == 0 or done == s.iterations:
            local = window.report()
            last = {"step": done, "lr": sched.get_last_lr()[0], **mean_over_ranks(local)}
            if main:
                metrics.write(last)
            bar.set_postfix(loss=f"{last['loss']:.3f}", cos=f"{last['cosine']:.3f}",
                            wait=f"{last['wait_fraction']:.0%}")
        if main and (done % s.checkpoint_every == 0 or done == s.iterations):
            save_checkpoint(ckpt_path, _checkpoint(run, opt, sched, done))
    bar.close()
    summary = {"modality": s.modality, "init": s.init, "iterations": s.iterations, "teacher": run.teacher["id"],
               "target_scale": run.scale, "final": last, "frames": len(run.dataset.ids)}
    if main:
        metrics.close()
        if s.iterations == 0 or first >= s.iterations:
            save_checkpoint(ckpt_path, _checkpoint(run, opt, sched, max(first, s.iterations)))
        write_json_atomic(s.out / "summary.json", summary)  # its existence means "done" to compare and the demo
    return summary
