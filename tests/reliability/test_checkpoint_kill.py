"""A student killed -9 in the middle of writing a checkpoint: the previous one stays valid and --resume continues."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from shared.errors import WeightsUnavailableError
from student_trainer.checkpoint import load_checkpoint
from student_trainer.logs import read_metrics
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from tests.servers import args_of, cli, kill9, run_cli

STALL_AT = 8


def _transfer_kw(out: Path, manifest: Path, url: str) -> dict:
    return dict(modality="hha", teacher_url=url, manifest=manifest, out=out, profile="tiny", iterations=12,
                batch_size=4, checkpoint_every=4, log_every=2, loader_workers=0, seed=5, device="cpu")


@pytest.mark.slow
def test_kill9_mid_checkpoint_keeps_previous_and_resume_matches_undisturbed(tmp_path, synth_tiny, teacher_url):
    kw = _transfer_kw(tmp_path / "run", synth_tiny, teacher_url)
    mark = tmp_path / "half-written"
    proc = cli("tests.reliability.stalling_checkpoint", "transfer", *args_of(**kw), "--no-progress",
               env={"STALL_CHECKPOINT_STEP": str(STALL_AT), "STALL_CHECKPOINT_MARK": str(mark)})
    deadline = time.monotonic() + 300
    while not mark.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.is_file(), proc.communicate()[1][-3000:]
    half = Path(mark.read_text().strip())
    kill9(proc)

    with pytest.raises(WeightsUnavailableError):  # the kill landed inside the write: its temp file is unreadable
        load_checkpoint(half)
    assert load_checkpoint(kw["out"] / "checkpoint.pt")["step"] == STALL_AT - kw["checkpoint_every"]

    run_cli("student_trainer.cli", "transfer", *args_of(**kw), "--no-progress", "--resume")
    resumed = load_checkpoint(kw["out"] / "checkpoint.pt")
    assert resumed["step"] == kw["iterations"] and not half.exists()  # the stale temp file is gone
    steps = [r["step"] for r in read_metrics(kw["out"] / "metrics.jsonl")]
    assert steps == list(range(2, 13, 2))

    reference = TransferSettings(**_transfer_kw(tmp_path / "ref", synth_tiny, teacher_url), progress=False)
    run_transfer(reference)
    expected = load_checkpoint(reference.out / "checkpoint.pt")["model"]
    assert all(torch.equal(resumed["model"][k], expected[k]) for k in expected)  # as if never interrupted
