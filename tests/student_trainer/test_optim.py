"""The shared optimiser: per-prefix lr factors, the schedule over every group, resume."""

import pytest
import torch
from torch import nn

from student_trainer.optim import make_optimizer
from student_trainer.train_settings import TrainSettings


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4))
        self.head = nn.Linear(4, 2)


def _settings(**kw) -> TrainSettings:
    return TrainSettings.model_construct(**({"iterations": 10, "lr": 0.5, "momentum": 0.9, "weight_decay": 0.0,
                                            "lr_milestones": [0.5], "lr_gamma": 0.1} | kw))


def test_prefix_factor_sets_the_group_lr_and_the_schedule_scales_every_group():
    net = _Net()
    opt, sched = make_optimizer(net, _settings(), lr_mult={"trunk.": 0.1})
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == [0.5, pytest.approx(0.05)]  # the un-prefixed group first: the one the loop logs
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in net.trunk.parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in net.head.parameters()}
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.05), pytest.approx(0.005)]


def test_factor_zero_leaves_the_prefixed_weights_unchanged():
    torch.manual_seed(0)
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt, sched = make_optimizer(net, _settings(weight_decay=5e-4), lr_mult={"trunk.": 0.0})
    for _ in range(3):
        opt.zero_grad()
        net.head(net.trunk(torch.randn(8, 3))).square().mean().backward()
        opt.step()
        sched.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("trunk."))
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_without_factors_one_group_and_resume_restores_the_state():
    net = _Net()
    opt, sched = make_optimizer(net, _settings())
    assert len(opt.param_groups) == 1
    net.head(net.trunk(torch.randn(2, 3))).sum().backward()
    opt.step()
    sched.step()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt2, sched2 = make_optimizer(_Net(), _settings(), state, lr_mult={})
    assert sched2.last_epoch == 1 and opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
