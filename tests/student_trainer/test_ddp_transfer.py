"""Students under torchrun: DDP ranks share each step's batch, fetch only their own frames, and train as one."""

import json

import numpy as np
import pytest
import torch

from shared.distributed import Ranks
from shared.manifest import read_manifest
from student_trainer.checkpoint import load_checkpoint
from student_trainer.logs import read_metrics
from student_trainer.transfer import run_transfer
from student_trainer.transfer_data import BatchSchedule
from student_trainer.transfer_settings import TransferSettings
from teacher_server.app import create_app
from teacher_server.settings import ServeSettings
from tests.servers import args_of, run_torchrun, uvicorn_thread


def test_ranks_split_every_batch_into_disjoint_positions():
    schedule = BatchSchedule(n_frames=10, batch_size=6, seed=2)
    for step in range(4):
        parts = [schedule.part(step, Ranks(r, 3)) for r in range(3)]
        idx, flips = schedule.batch(step)
        assert all(len(p[0]) == 2 for p in parts)
        assert np.array_equal(np.concatenate([p[0] for p in parts]), idx)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), flips)
    assert np.array_equal(schedule.part(0, Ranks())[0], schedule.batch(0)[0])
    with pytest.raises(ValueError, match="does not split evenly over 4 ranks"):
        schedule.part(0, Ranks(0, 4))


class BatchRecorder:
    """ASGI wrapper keeping the frame ids of every ``POST /features/batch`` in arrival order."""

    def __init__(self, app) -> None:
        self.app, self.batches = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/features/batch":
            return await self.app(scope, receive, send)
        body = bytearray()

        async def recording_receive():
            message = await receive()
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                self.batches.append(json.loads(body)["ids"])
            return message

        return await self.app(scope, recording_receive, send)


# No BatchNorm: on CPU each rank normalises its own half batch (SyncBatchNorm is CUDA-only), which is the one
# thing that would make two ranks x 2 frames differ from one process x 4 frames.
# A constant learning rate (gamma 1), so the run can stop at step 8 and be resumed to 12 with a longer --iterations.
SETTINGS = dict(modality="hha", profile="tiny", batch_size=4, lr=0.05, lr_gamma=1.0, log_every=2, checkpoint_every=4,
                loader_workers=0)


@pytest.mark.slow
def test_two_ddp_ranks_train_like_one_process_and_resume(tmp_path, synth_tiny, synth_store, teacher_url):
    one = TransferSettings(**SETTINGS, teacher_url=teacher_url, manifest=synth_tiny, out=tmp_path / "one",
                           iterations=12, batch_norm=False, progress=False)
    run_transfer(one)
    recorder = BatchRecorder(create_app(ServeSettings(stores=[synth_store])))
    out = tmp_path / "ddp"
    with uvicorn_thread(recorder) as url:
        args = [*args_of(**SETTINGS, teacher_url=url, manifest=synth_tiny, out=out), "--no-batch-norm",
                "--no-progress"]
        first = run_torchrun(2, "student_trainer.cli", "transfer", *args, "--iterations", "8")
        rows = read_metrics(out / "metrics.jsonl")
        assert [r["step"] for r in rows] == [2, 4, 6, 8] and rows[-1]["loss"] < rows[0]["loss"]
        assert first.stdout.count('"modality"') == 1  # rank 0 alone prints the summary
        run_torchrun(2, "student_trainer.cli", "transfer", *args, "--iterations", "12", "--resume")

    # rank 0 alone wrote the run folder: one checkpoint, metrics without duplicates, its own config
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "summary.json"]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [2, 4, 6, 8, 10, 12]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    ddp, ref = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(one.out / "checkpoint.pt")
    assert ddp["step"] == 12
    # gradients averaged over two half batches = the gradient of the whole batch: same weights after 12 steps
    for name, w in ref["model"].items():
        torch.testing.assert_close(ddp["model"][name], w, rtol=1e-4, atol=1e-6, msg=name)

    # each step: two requests (one per rank) of 2 frames, disjoint, together the one-process batch
    frames = [f.id for f in read_manifest(synth_tiny).split("depth_transfer") if f.hha]
    schedule = BatchSchedule(len(frames), 4, seed=0)
    assert len(recorder.batches) == 2 * 12
    for step in range(12):
        a, b = recorder.batches[2 * step : 2 * step + 2]
        assert len(a) == len(b) == 2 and not set(a) & set(b)
        assert sorted(a + b) == sorted(frames[i] for i in schedule.batch(step)[0])
