"""The optimiser both training loops use: SGD with momentum and a step schedule, restored on resume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from student_trainer.train_settings import TrainSettings

__all__ = ["make_optimizer"]


def make_optimizer(
    model: nn.Module, s: TrainSettings, state: dict[str, Any] | None = None,
    lr_mult: Mapping[str, float] | None = None,
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD over the trainable parameters, lr x ``s.lr_gamma`` at the fractions ``s.lr_milestones`` of
    ``s.iterations``; model, optimiser and scheduler restored from a checkpoint ``state`` when given.

    ``lr_mult`` maps a parameter-name prefix (``"trunk."``) to a factor on ``s.lr`` for the parameters under it
    (the first matching prefix wins); the rest learn at ``s.lr`` and form the first group, whose lr is logged."""
    mults = lr_mult or {}
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            mult = next((m for prefix, m in mults.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(mult, []).append(p)
    params = [{"params": ps, "lr": s.lr * m} for m, ps in groups.items() if ps]
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    milestones = [round(m * s.iterations) for m in s.lr_milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=s.lr_gamma)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    return opt, sched
