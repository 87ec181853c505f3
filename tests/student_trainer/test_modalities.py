"""The modality registry: settings derive their choices from it, flips delegate to the exact ones, and a new
modality registered in one place trains a student and a detector (issue 15, point 2)."""

from __future__ import annotations

import numpy as np
import pytest

from shared import modalities
from shared.flow_image import encode_flow_image, flip_flow, flip_flow_image
from shared.imageio import read_depth_m
from shared.modalities import Modality, modality, names
from student_trainer.detect import run_detect
from student_trainer.detect_settings import DetectSettings
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from tests.student_trainer.test_detect_run import proposals  # noqa: F401 - the module's fixture, reused


def test_registry_names_and_clear_errors(tmp_path):
    assert names() == ["rgb", "hha", "flow"] and names(students_only=True) == ["hha", "flow"]
    with pytest.raises(ValueError, match=r"unknown modality 'sonar'; known: \['flow', 'hha', 'rgb'\]"):
        modality("sonar")
    with pytest.raises(ValueError, match="unknown modality 'sonar'"):
        TransferSettings(modality="sonar", manifest=tmp_path / "m", out=tmp_path)
    with pytest.raises(ValueError, match="teacher's modality"):
        TransferSettings(modality="rgb", manifest=tmp_path / "m", out=tmp_path)
    assert DetectSettings(modality="rgb", manifest=tmp_path / "m", out=tmp_path).default_test_split() == "depth_test"
    s = TransferSettings(modality="flow", manifest=tmp_path / "m", out=tmp_path)
    assert s.default_splits() == ["flow_transfer"] and s.flip == "exact"


def test_flow_flip_is_the_exact_one_at_every_u_level():
    img = np.zeros((2, 256, 3), np.uint8)
    img[..., 0] = np.arange(256, dtype=np.uint8)  # every u level once
    img[..., 1:] = 128
    assert np.array_equal(modality("flow").flip(img), flip_flow_image(img))
    assert modality("flow").flip(img)[0, 0, 0] == 0  # u level 255 (the right-most column) -> 0, not 1
    flow = np.random.default_rng(0).uniform(-7.9, 7.8, (8, 10, 2)).astype(np.float32)
    assert np.array_equal(modality("flow").flip(encode_flow_image(flow)), encode_flow_image(flip_flow(flow)))


def _depth_image(path) -> np.ndarray:
    """Raw (Kinect-like) depth as a 3-channel image: inverse depth scaled to 0..255, 0 where missing."""
    d = read_depth_m(path)
    inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-3), 0.0)
    grey = np.clip(np.rint(255 * inv / max(inv.max(), 1e-6)), 0, 255).astype(np.uint8)
    return np.dstack([grey] * 3)


def test_a_modality_registered_in_one_place_trains_a_student_and_a_detector(
        monkeypatch, tmp_path, synth_tiny, teacher_url, proposals):  # noqa: F811
    raw = Modality("rawdepth", manifest_field="raw_depth", encoded_from=None, transfer_split="depth_transfer",
                   train_split="depth_train", test_split="depth_test", mean=(0.3, 0.3, 0.3), std=(0.3, 0.3, 0.3),
                   read=_depth_image)
    monkeypatch.setitem(modalities._REGISTRY, "rawdepth", raw)  # the one place (removed again after the test)

    summary = run_transfer(TransferSettings(modality="rawdepth", teacher_url=teacher_url, manifest=synth_tiny,
                                            out=tmp_path / "student", profile="tiny", iterations=6, batch_size=4,
                                            loader_workers=0, progress=False, eval_splits=["depth_test"]))
    assert summary["modality"] == "rawdepth" and summary["final"]["step"] == 6
    assert np.isfinite(summary["held_out"]["residual"]) and summary["held_out"]["frames"] > 0
    det = run_detect(DetectSettings(modality="rawdepth", manifest=synth_tiny, out=tmp_path / "det", init="transfer",
                                    trunk_checkpoint=tmp_path / "student" / "checkpoint.pt", proposals=proposals,
                                    profile="tiny", iterations=4, checkpoint_every=2, log_every=2, loader_workers=0,
                                    progress=False))
    assert det["modality"] == "rawdepth" and det["test_split"] == "depth_test" and 0 <= det["mAP"] <= 1
