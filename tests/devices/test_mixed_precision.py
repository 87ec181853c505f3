"""The CUDA code paths exercised without a GPU: AMP on the CPU autocasts in bfloat16 through the same code, and
NHWC (channels_last) gives the same maps; each compared with float32 within a stated tolerance (issue 16, point 1).

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2**-9 = 0.2 % per operation), so after a few
convolutions a map differs by a few percent of its peak, and short training runs by a few percent of their loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.device import autocast, autocast_dtype
from shared.features import encoding
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.detect import run_detect
from student_trainer.detect_settings import DetectSettings
from student_trainer.detector import FastRCNN
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from teacher_server.precompute import precompute
from teacher_server.store import FeatureStore
from tests.student_trainer.test_detect_run import proposals  # noqa: F401 - fixtures of other folders, reused
from tests.teacher_server.conftest import dataset, store_path  # noqa: F401

CPU = torch.device("cpu")


def test_amp_means_float16_on_cuda_bfloat16_on_cpu_only_when_asked():
    assert autocast_dtype(torch.device("cuda"), None) is torch.float16
    assert autocast_dtype(torch.device("cuda"), True) is torch.float16
    assert autocast_dtype(CPU, None) is None and autocast_dtype(CPU, False) is None
    assert autocast_dtype(CPU, True) is torch.bfloat16
    with autocast(CPU, torch.bfloat16):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype is torch.bfloat16


def test_channels_last_gives_the_same_maps_and_detections():
    torch.manual_seed(0)
    trunk = AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)).eval()
    model = FastRCNN(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)), 6, 32, 0.0).eval()
    x = torch.randn(2, 3, 64, 80)
    rois = [torch.tensor([[0.0, 0.0, 30.0, 40.0], [10.0, 5.0, 60.0, 50.0]])] * 2
    with torch.inference_mode():
        dense, dense_det = trunk(x), model(x, rois)
        trunk, model = trunk.to(memory_format=torch.channels_last), model.to(memory_format=torch.channels_last)
        nhwc = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(trunk(nhwc), dense, rtol=1e-5, atol=1e-5)
        for a, b in zip(model(nhwc, rois), dense_det, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_precompute_with_amp_on_cpu_is_within_bfloat16_of_float32(tmp_path, dataset, teacher, store_path):  # noqa: F811
    precompute(tmp_path / "amp", [dataset], teacher, encoding("f32-zstd1"), shard_frames=8, loader_workers=0,
               amp=True, device=CPU, progress=False)
    for view in ("identity", "mirror"):
        amp = FeatureStore.open(tmp_path / "amp").collections["tiny"].read(slice(None), view)
        ref = FeatureStore.open(store_path).collections["tiny"].read(slice(None), view)
        peak = np.abs(ref).reshape(len(ref), -1).max(axis=1)
        err = np.abs(amp - ref).reshape(len(ref), -1).max(axis=1) / peak
        assert err.max() < 0.05, f"{view}: bfloat16 maps differ by up to {err.max():.3f} of the frame's peak"
        assert err.max() > 0  # the autocast path really ran


def _transfer(tmp_path, synth_tiny, url, amp: bool | None):
    return run_transfer(TransferSettings(modality="hha", teacher_url=url, manifest=synth_tiny,
                                         out=tmp_path / f"amp-{amp}", profile="tiny", iterations=10, batch_size=4,
                                         log_every=10, loader_workers=0, progress=False, amp=amp, device="cpu"))


def test_transfer_with_amp_on_cpu_tracks_float32(tmp_path, synth_tiny, teacher_url):
    amp, ref = _transfer(tmp_path, synth_tiny, teacher_url, True), _transfer(tmp_path, synth_tiny, teacher_url, None)
    assert amp["final"]["loss"] != ref["final"]["loss"]  # the autocast path really ran
    assert amp["final"]["loss"] == pytest.approx(ref["final"]["loss"], rel=0.05)
    assert amp["final"]["cosine"] == pytest.approx(ref["final"]["cosine"], abs=0.02)


def test_detect_with_amp_on_cpu_tracks_float32(tmp_path, synth_tiny, proposals):  # noqa: F811
    runs = {}
    for amp in (True, None):
        runs[amp] = run_detect(DetectSettings(modality="rgb", manifest=synth_tiny, out=tmp_path / f"det-{amp}",
                                              proposals=proposals, profile="tiny", iterations=8, log_every=8,
                                              checkpoint_every=8, loader_workers=0, progress=False, amp=amp,
                                              device="cpu"))
    amp, ref = runs[True]["final"], runs[None]["final"]
    assert amp["loss"] != ref["loss"]
    assert amp["loss"] == pytest.approx(ref["loss"], rel=0.05)
