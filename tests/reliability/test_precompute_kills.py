"""kill -9 precompute at 10 random points in a row, resuming each time: the final store equals a clean run."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr

from teacher_server.store import FeatureStore
from teacher_server.verify import verify_store
from tests.reliability.conftest import assert_same_store, partial_files, precompute_args, store_created
from tests.servers import cli, kill9, run_cli
from tests.teacher_server.conftest import make_rgb_dataset

KILLS = 10
SHARD, BATCH, FRAMES = 2, 2, 64


def _start(store, manifest, ckpt):
    return cli("teacher_server.cli", "precompute", *precompute_args(store, manifest, ckpt, SHARD, BATCH))


def _done_frames(store) -> int:
    """Frames marked done (the bitmap alone: cheap enough to poll while shards take tens of ms)."""
    return int(zarr.open_array(store / "tiny" / "done", mode="r")[:].sum()) if store_created(store) else 0


def _wait_progress(proc, store, done: int) -> int:
    """Done frames once the run has marked more than ``done`` (or has exited)."""
    while proc.poll() is None and _done_frames(store) == done:
        time.sleep(0.02)
    return _done_frames(store)


@pytest.mark.slow
def test_ten_kill9_in_a_row_then_resume_equals_clean_run(tmp_path, teacher_ckpt):
    manifest = make_rgb_dataset(tmp_path / "d", n=FRAMES, hw=(96, 128))
    clean, store = tmp_path / "clean", tmp_path / "killed"
    run_cli("teacher_server.cli", "precompute", *precompute_args(clean, manifest, teacher_ckpt, SHARD, BATCH))
    rng = np.random.default_rng(7)
    interrupted, done_after_kill = 0, [0]
    t0 = time.monotonic()
    for _ in range(KILLS):
        proc = _start(store, manifest, teacher_ckpt)
        # Two shards of progress give this run's own pace (whatever the load); then kill at a random point of
        # the next shard's compute-and-write.
        first = _wait_progress(proc, store, done_after_kill[-1])
        t_first = time.monotonic()
        _wait_progress(proc, store, first)
        time.sleep(rng.uniform(0.0, time.monotonic() - t_first))
        if proc.poll() is None:
            interrupted += 1
        else:  # it finished before the kill: fine, but it must have finished cleanly
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
        kill9(proc)
        # At every kill point: what is marked done verifies, and done frames are never lost.
        assert verify_store(FeatureStore.open(store)) == []
        done_after_kill.append(_done_frames(store))
    run_cli("teacher_server.cli", "precompute", *precompute_args(store, manifest, teacher_ckpt, SHARD, BATCH))
    seconds = time.monotonic() - t0
    assert interrupted >= KILLS // 3, f"only {interrupted} of {KILLS} kills landed mid-run"
    assert done_after_kill == sorted(done_after_kill)
    assert partial_files(store / "tiny") == []  # temp files of killed writes were cleaned up on rewrite
    files = assert_same_store(store, clean)
    col = FeatureStore.open(store).collections["tiny"]
    assert col.done().all() and col.summary() == FeatureStore.open(clean).collections["tiny"].summary()
    assert verify_store(FeatureStore.open(store)) == []
    print(f"\n{interrupted}/{KILLS} kills mid-run, done frames after each kill {done_after_kill[1:]}; final "
          f"store equals the clean run: {col.n_shards} shards, {col.n_frames} frames, {len(files)} files; "
          f"{seconds:.1f} s")
