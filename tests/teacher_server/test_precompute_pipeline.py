"""The precompute pipeline's defaults: loader workers per device, the OpenMP wait policy of a precompute process."""

from __future__ import annotations

import os

import pytest
import torch

from teacher_server import cli
from teacher_server.precompute import default_loader_workers
from teacher_server.store import FeatureStore


def test_loader_workers_share_the_cpu_with_the_forward_and_take_the_host_beside_a_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_loader_workers(torch.device("cpu")) == 2
    assert default_loader_workers(torch.device("cuda")) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 ranks on this host split its cores
    assert default_loader_workers(torch.device("cuda:1")) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_loader_workers(torch.device("cuda")) == 2


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_precompute_command_makes_openmp_wait_passively_unless_told(tmp_path, dataset, teacher_ckpt, monkeypatch,
                                                                      given, expected):
    if given is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
    store = tmp_path / "store"
    assert cli.main(["precompute", "--store", str(store), "--manifests", str(dataset), "--arch", "checkpoint",
                     "--weights", str(teacher_ckpt), "--loader-workers", "0", "--shard-frames", "16",
                     "--no-progress"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == expected
    assert FeatureStore.open(store).collections["tiny"].done().all()
