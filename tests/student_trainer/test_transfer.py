"""Supervision transfer: schedule, geometry/alignment, resume, and students against a real server."""

import json

import numpy as np
import pytest
import torch

from shared.errors import ConfigError, GeometryError
from shared.imageio import write_image
from shared.modalities import modality
from shared.nets.trunks import trunk_spec
from student_trainer.checkpoint import load_checkpoint
from student_trainer.logs import read_metrics
from student_trainer.student import student_spec_for
from student_trainer.transfer import run_transfer
from student_trainer.transfer_data import BatchSchedule, TransferBatches
from student_trainer.transfer_settings import TransferSettings


def test_schedule_is_deterministic_and_covers_every_frame_each_epoch():
    s = BatchSchedule(n_frames=10, batch_size=4, seed=3)
    first = [s.batch(k) for k in range(5)]
    again = [BatchSchedule(10, 4, 3).batch(k) for k in range(5)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    stream = np.concatenate([b[0] for b in first])  # 20 items = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(BatchSchedule(10, 4, 4).batch(0)[0], first[0][0])
    assert not BatchSchedule(10, 4, 3, flip=False).batch(0)[1].any()


class RampTargets:
    """Target of frame k: channel 0 = x-position ramp, channel 1 = k everywhere (frame identity)."""

    def __init__(self, ids):
        self.index = {fid: k for k, fid in enumerate(ids)}

    def get_many(self, frame_ids):
        out = np.zeros((len(frame_ids), 2, 3, 5), np.float32)
        out[:, 0] = np.arange(5, dtype=np.float32)
        for i, fid in enumerate(frame_ids):
            out[i, 1] = self.index[fid]
        return out


def test_flip_and_frame_pairing_alignment(tmp_path):
    # Inputs encode their frame index (green level) and x-position (red ramp); targets encode the same.
    ids, paths = [], []
    for k in range(6):
        img = np.zeros((24, 40, 3), np.uint8)
        img[..., 0] = np.linspace(0, 250, 40, dtype=np.uint8)[None, :]
        img[..., 1] = 40 * k
        paths.append(write_image(tmp_path / f"{k}.png", img))
        ids.append(f"t.{k}")
    data = TransferBatches(ids, paths, modality("hha"), BatchSchedule(6, 4, seed=0), steps=6, first_step=0,
                           input_hw=(24, 40), make_source=lambda: RampTargets(ids))
    flips_seen = set()
    for k in range(len(data)):
        x, t, step = data[k]
        idx, flips = BatchSchedule(6, 4, seed=0).batch(step)
        for b in range(4):
            green = x[b, 1].mean().item() * 0.25 + 0.5  # undo the hha preset normalisation
            assert round(green * 255 / 40) == t[b, 1, 0, 0].item() == idx[b]  # same frame on both sides
            input_rises = x[b, 0, :, -1].mean() > x[b, 0, :, 0].mean()
            target_rises = t[b, 0, 0, -1] > t[b, 0, 0, 0]
            assert input_rises == target_rises == (not flips[b])  # a flip mirrors input and target together
            flips_seen.add(bool(flips[b]))
    assert flips_seen == {True, False}


class ViewTargets(RampTargets):
    """Like RampTargets, but the mirror view of frame k is recognisably its own map (channel 0 = 100 - ramp)."""

    def get_many(self, frame_ids, views=None):
        out = super().get_many(frame_ids)
        for i, view in enumerate(views or ["identity"] * len(frame_ids)):
            if view == "mirror":
                out[i, 0] = 100 - out[i, 0]
        return out


@pytest.mark.parametrize("flip", ["exact", "mirrored", "none"])
def test_flip_modes_choose_the_target_of_the_mirrored_frame(tmp_path, flip):
    ids, paths, mirrored = [], [], []
    for k in range(6):
        img = np.full((24, 40, 3), 40 * k, np.uint8)
        write_image(tmp_path / f"{k}.png", img)
        write_image(tmp_path / f"{k}m.png", np.full_like(img, 7))  # "the image of the mirrored inputs"
        ids.append(f"f{k}")
        paths.append(tmp_path / f"{k}.png")
        mirrored.append(tmp_path / f"{k}m.png")
    schedule = BatchSchedule(6, 4, seed=0, flip=flip != "none")
    data = TransferBatches(ids, paths, modality("hha"), schedule, steps=4, first_step=0, input_hw=(24, 40),
                           make_source=lambda: ViewTargets(ids), flip=flip, mirrored_paths=mirrored)
    seen = set()
    for step in range(4):
        x, t, _ = data[step]
        _, flips = schedule.batch(step)
        for b in range(4):
            seen.add(bool(flips[b]))
            if not flips[b]:
                assert t[b, 0, 0, 0].item() == 0 and t[b, 0, 0, -1].item() == 4  # the identity map as cached
                continue
            if flip == "exact":  # the store's mirror view, and the recorded mirrored image as input
                assert t[b, 0, 0, 0].item() == 100 and t[b, 0, 0, -1].item() == 96
                assert torch.allclose(x[b], modality("hha").to_tensor(np.full((24, 40, 3), 7, np.uint8)))
            else:  # the identity map flipped
                assert t[b, 0, 0, 0].item() == 4 and t[b, 0, 0, -1].item() == 0
    assert seen == ({False} if flip == "none" else {True, False})


def test_flow_flip_negates_u():
    img = np.full((4, 6, 3), 128, np.uint8)
    img[..., 0] = 160  # u = +2 px
    flipped = modality("flow").flip(img)
    assert (flipped[..., 0] == 96).all() and (flipped[..., 1:] == 128).all()


def test_padding_search_matches_teacher_geometry():
    spec = student_spec_for(trunk_spec("alexnet-small"), (96, 128), (6, 8))
    assert spec.conv1_padding == 2
    with pytest.raises(GeometryError, match="no conv1 padding"):
        student_spec_for(trunk_spec("alexnet-small"), (96, 128), (40, 40))


def _settings(tmp_path, synth_tiny, teacher_url, **kw):
    base = dict(modality="hha", teacher_url=teacher_url, manifest=synth_tiny, out=tmp_path / "run", profile="tiny",
                iterations=16, batch_size=4, checkpoint_every=8, log_every=2, loader_workers=0, progress=False)
    return TransferSettings(**(base | kw))


def test_transfer_trains_and_writes_outputs(tmp_path, synth_tiny, teacher_url):
    s = _settings(tmp_path, synth_tiny, teacher_url, iterations=30, lr=0.02)
    summary = run_transfer(s)
    rows = read_metrics(s.out / "metrics.jsonl")
    assert rows[-1]["step"] == 30 and rows[-1]["loss"] < rows[0]["loss"]
    assert {"cosine", "residual", "steps_per_s", "wait_fraction", "lr"} <= rows[0].keys()
    ckpt = load_checkpoint(s.out / "checkpoint.pt")
    assert ckpt["step"] == 30 and ckpt["teacher"]["id"] == summary["teacher"]
    assert ckpt["trunk"]["spec"]["name"] == "alexnet-small" and ckpt["git"]
    assert json.loads((s.out / "config.json").read_text())["settings"]["modality"] == "hha"


def test_resume_continues_exactly(tmp_path, synth_tiny, teacher_url, monkeypatch):
    full = _settings(tmp_path / "a", synth_tiny, teacher_url)
    run_transfer(full)
    original = TransferBatches.__getitem__

    def interrupt_at_step_11(self, k):
        if self.first_step + k == 11:
            raise KeyboardInterrupt
        return original(self, k)

    broken = _settings(tmp_path / "b", synth_tiny, teacher_url)
    monkeypatch.setattr(TransferBatches, "__getitem__", interrupt_at_step_11)
    with pytest.raises(KeyboardInterrupt):
        run_transfer(broken)
    monkeypatch.setattr(TransferBatches, "__getitem__", original)
    assert load_checkpoint(broken.out / "checkpoint.pt")["step"] == 8  # the last periodic checkpoint survived
    run_transfer(broken.model_copy(update={"resume": True}))
    a = load_checkpoint(full.out / "checkpoint.pt")["model"]
    b = load_checkpoint(broken.out / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(broken.out / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 16
    # resuming may train on for longer, not differently: another target scale is refused before any step
    with pytest.raises(ConfigError, match=r"holds a student made with target_scale=None; this run asks for "
                                          r"target_scale=2\.0"):
        run_transfer(broken.model_copy(update={"resume": True, "target_scale": 2.0}))
    assert json.loads((broken.out / "config.json").read_text())["settings"]["target_scale"] is None  # untouched


def test_baselines_random_and_copy_rgb(tmp_path, synth_tiny, teacher_url, synth_teacher_ckpt):
    rnd = run_transfer(_settings(tmp_path / "r", synth_tiny, teacher_url, iterations=0))
    assert rnd["iterations"] == 0 and load_checkpoint(tmp_path / "r" / "run" / "checkpoint.pt")["step"] == 0
    s = _settings(tmp_path / "c", synth_tiny, teacher_url, iterations=0, init="copy-rgb",
                  rgb_checkpoint=synth_teacher_ckpt)
    run_transfer(s)
    student = load_checkpoint(s.out / "checkpoint.pt")["model"]
    teacher = load_checkpoint(synth_teacher_ckpt)["model"]
    assert torch.equal(student["trunk.conv3.0.weight"], teacher["conv3.0.weight"])
    with pytest.raises(ValueError, match="copy-rgb needs --rgb-checkpoint"):
        _settings(tmp_path, synth_tiny, teacher_url, init="copy-rgb")


def test_clear_errors_before_training(tmp_path, synth_tiny, teacher_url):
    with pytest.raises(ConfigError, match="no frames with a hha image in splits"):
        run_transfer(_settings(tmp_path, synth_tiny, teacher_url, splits=["nonexistent"]))
