"""The training engine both trainers use (supervision transfer and detection): one loop with hooks, and
``evaluate``.

The loop knows nothing model-specific: a trainer passes its per-step forward + loss (``step_fn``), what to do
with a metrics record (``log``) and how to write a checkpoint (``save``). Per step, in order: fetch (each loader
item is one whole step, tagged with its step number), forward + loss under autocast, a NaN/inf check, backward and
optimiser step (through a GradScaler under float16 autocast), the lr schedule, the metrics window, and the log and
checkpoint cadence. Under torchrun ``reduce`` averages a record over the ranks before it is logged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from shared.device import autocast
from student_trainer.logs import MetricWindow
from student_trainer.worker_errors import unwrap_failure

__all__ = ["StepResult", "TrainLoop", "evaluate", "optimizer_step", "restore_rng", "rng_state"]

R = TypeVar("R")


@dataclass
class StepResult:
    """What a trainer's step function returns: the loss to back-propagate and the numbers to log."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The RNG state a checkpoint carries, so a resumed run samples (RoIs, dropout) as the original did."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor) -> None:
    """Backward and step (scaled under float16 autocast, where the GradScaler also skips overflowing steps)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@dataclass
class TrainLoop:
    """One training run's loop.

    Attributes:
        net: the module stepped (a DistributedDataParallel replica under torchrun).
        step_fn: ``(batch, step) -> StepResult``: forward and loss of one step's batch (the loader item without its
            step tag), on ``device``; runs under autocast when ``amp_dtype`` is set.
        save: writes the checkpoint of the run after ``step`` optimiser steps.
        log: receives each metrics record (``step``, ``lr``, the step function's metrics averaged since the last
            record, throughput and the share of time spent waiting for data).
        reduce: turns this process's record into the run's (the mean over torchrun ranks).
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step_fn: Callable[[Any, int], StepResult]
    device: torch.device
    amp_dtype: torch.dtype | None
    save: Callable[[int], None]
    log: Callable[[dict[str, Any]], None]
    log_every: int
    checkpoint_every: int
    reduce: Callable[[dict[str, Any]], dict[str, Any]] = lambda record: record
    desc: str = "train"
    progress: bool = True
    postfix: tuple[str, ...] = ("loss",)

    def run(self, loader: Iterable[Any], first: int, iterations: int,
            resume_rng: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """Steps ``first .. iterations - 1``; returns the last metrics record (empty when no step ran).

        ``resume_rng`` (a checkpoint's :func:`rng_state`) is restored once the loader has started, so its workers'
        seeds do not consume it.

        Raises:
            FloatingPointError: a non-finite loss without a GradScaler to skip the step.
            RuntimeError: the loader's items arrive out of step.
        """
        scaler = torch.amp.GradScaler(enabled=self.amp_dtype == torch.float16)
        it = iter(loader)
        if resume_rng is not None:
            restore_rng(resume_rng, self.device)
        bar = tqdm(total=iterations, initial=first, desc=self.desc, unit="step", disable=not self.progress)
        window, last = MetricWindow(), {}
        self.net.train()
        t_prev = time.perf_counter()
        for step in range(first, iterations):
            # fetch: waits only when the prefetching loader falls behind
            *batch, got = unwrap_failure(next(it))
            t_ready = time.perf_counter()
            if got != step:
                raise RuntimeError(f"data for step {got} arrived at step {step}")
            # forward + loss
            with autocast(self.device, self.amp_dtype):
                out = self.step_fn(batch[0] if len(batch) == 1 else batch, step)
            if not scaler.is_enabled() and not math.isfinite(out.loss.item()):
                raise FloatingPointError(f"loss is {out.loss.item()} at step {step}; lower --lr (now "
                                         f"{self.optimizer.param_groups[0]['initial_lr']})")
            # backward + step (gradients averaged over ranks by DDP)
            optimizer_step(self.optimizer, scaler, out.loss)
            self.scheduler.step()
            # log
            now = time.perf_counter()
            window.add({"loss": out.loss.item(), **out.metrics}, t_ready - t_prev, now - t_prev)
            t_prev = now
            bar.update()
            done = step + 1
            if done % self.log_every == 0 or done == iterations:
                last = {"step": done, "lr": self.scheduler.get_last_lr()[0], **self.reduce(window.report())}
                self.log(last)
                bar.set_postfix({k: f"{last[k]:.3f}" for k in self.postfix if k in last})
            # checkpoint
            if done % self.checkpoint_every == 0 or done == iterations:
                self.save(done)
        bar.close()
        return last


def evaluate(model: nn.Module, batches: Iterable[Any], device: torch.device, amp_dtype: torch.dtype | None,
             fn: Callable[[nn.Module, Any], R]) -> list[R]:
    """``fn(model, batch)`` over every batch with the model in eval mode, under ``torch.inference_mode`` (and
    autocast when ``amp_dtype`` is set); the model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, amp_dtype):
            return [fn(model, batch) for batch in batches]
    finally:
        model.train(was_training)
