"""Every ``device.type == "cuda"`` branch against the CPU (skipped without CUDA; ``bench/gpu_check.sh`` runs them on a
GPU machine). Tolerances: float32 CUDA kernels (cuDNN, TF32 off) agree with the CPU to ~1e-4 relative; float16
autocast to a few percent of a map's peak."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.device import autocast, autocast_dtype
from shared.distributed import ONE_PROCESS, rank_device
from shared.features import encoding
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.detector import FastRCNN
from student_trainer.engine import restore_rng, rng_state
from student_trainer.student import TransferModel
from student_trainer.transfer import transfer_loss
from teacher_server.precompute import precompute
from teacher_server.shard_writer import to_host
from teacher_server.store import FeatureStore
from tests.teacher_server.conftest import dataset, store_path  # noqa: F401 - fixtures of another folder

pytestmark = pytest.mark.cuda
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_rank_device_and_amp_on_cuda():
    assert rank_device("auto", ONE_PROCESS).type == "cuda"
    assert autocast_dtype(CUDA, None) is torch.float16


def test_async_copy_to_the_host_equals_the_maps():
    maps = torch.randn(4, 2, 8, 3, 5, device=CUDA)
    host = to_host(maps)
    assert host.tensor.is_pinned() and host.ready is not None
    np.testing.assert_array_equal(host.numpy(), maps.cpu().numpy())


@pytest.mark.parametrize("amp", [False, True])
def test_precompute_on_cuda_equals_the_cpu_store(tmp_path, dataset, teacher, store_path, amp):  # noqa: F811
    precompute(tmp_path / "gpu", [dataset], teacher, encoding("f32-zstd1"), shard_frames=8, loader_workers=0,
               device=CUDA, amp=amp, progress=False)
    for view in ("identity", "mirror"):
        gpu = FeatureStore.open(tmp_path / "gpu").collections["tiny"].read(slice(None), view)
        cpu = FeatureStore.open(store_path).collections["tiny"].read(slice(None), view)
        peak = np.abs(cpu).max()
        assert np.abs(gpu - cpu).max() <= (0.03 if amp else 1e-4) * peak


def test_transfer_step_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    model = TransferModel(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)), 16).eval()
    x, target = torch.randn(4, 3, 96, 128), torch.rand(4, 16, 6, 8)
    with torch.inference_mode():
        p_cpu, _, loss_cpu = transfer_loss(model, x, target, CPU)
        model.to(CUDA, memory_format=torch.channels_last)
        p_gpu, _, loss_gpu = transfer_loss(model, x, target, CUDA)
        with autocast(CUDA, torch.float16):
            _, _, loss_amp = transfer_loss(model, x, target, CUDA)
    torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-4, atol=1e-4)
    assert loss_gpu.item() == pytest.approx(loss_cpu.item(), rel=1e-4)
    assert loss_amp.item() == pytest.approx(loss_cpu.item(), rel=0.03)


def test_detector_forward_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    model = FastRCNN(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)), 6, 32, 0.0).eval()
    x = torch.randn(2, 3, 64, 80)
    rois = [torch.tensor([[0.0, 0.0, 30.0, 40.0], [10.0, 5.0, 60.0, 50.0]])] * 2
    with torch.inference_mode():
        cpu = model(x, rois)
        model.to(CUDA, memory_format=torch.channels_last)
        gpu = model(x.to(CUDA, memory_format=torch.channels_last), [r.to(CUDA) for r in rois])
    for a, b in zip(gpu, cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


def test_cuda_rng_state_round_trips():
    state = rng_state(CUDA)
    first = torch.rand(3, device=CUDA)
    restore_rng(state, CUDA)
    assert torch.equal(torch.rand(3, device=CUDA), first)
