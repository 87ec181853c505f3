"""Precompute under torchrun: ranks take worker slots from the environment and fill the same store."""

import json

import numpy as np
import pytest

from shared.distributed import Ranks, ranks_from_env
from shared.errors import ConfigError
from teacher_server.precompute import WorkerSlot, worker_slot
from teacher_server.store import FeatureStore
from tests.servers import args_of, run_torchrun
from tests.teacher_server.conftest import SHARD


def test_worker_slot_comes_from_torchrun_unless_given():
    assert worker_slot(None, Ranks()) == WorkerSlot(0, 1)
    assert worker_slot(None, ranks_from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})) == WorkerSlot(1, 3)
    assert worker_slot("1/3", Ranks(1, 3)) == WorkerSlot(1, 3)  # agreeing flag is fine
    assert worker_slot("1/2", Ranks()) == WorkerSlot(1, 2)  # plain start: the flag alone decides
    with pytest.raises(ConfigError, match=r"--worker 0/2 disagrees with torchrun's RANK=1 WORLD_SIZE=2"):
        worker_slot("0/2", Ranks(1, 2))
    with pytest.raises(ConfigError, match="0 <= i < n"):
        worker_slot("3/2", Ranks())
    with pytest.raises(ConfigError, match="need 0 <= RANK < WORLD_SIZE"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def _store_files(root) -> dict[str, bytes]:
    """Every shard file's bytes, keyed by path below the store (the chunks exactly as served)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "tiny" / "features" / "c").rglob("*"))
            if p.is_file()}


def _summary_line(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith("teacher ")]


@pytest.mark.slow
def test_two_torchrun_ranks_equal_single_process(tmp_path, dataset, teacher_ckpt, store_path):
    args = [*args_of(manifests=dataset, arch="checkpoint", weights=teacher_ckpt, shard_frames=SHARD, batch_size=5,
                     loader_workers=0), "--no-progress"]  # the settings of the single-process store_path
    single, ranked = store_path, tmp_path / "ranked"
    out = run_torchrun(2, "teacher_server.cli", "precompute", "--store", str(ranked), *args).stdout
    lines = _summary_line(out)
    assert len(lines) == 1 and "computed 37 frames (5 shards)" in lines[0]  # one rank prints the whole run

    a, b = FeatureStore.open(single).collections["tiny"], FeatureStore.open(ranked).collections["tiny"]
    assert _store_files(ranked) == _store_files(single) and len(_store_files(single)) == 5
    assert a.done().all() and np.array_equal(a.done(), b.done())
    assert np.array_equal(a.stats_rows(), b.stats_rows())
    attrs = [json.loads((root / "tiny" / "zarr.json").read_text())["attributes"]["xmodal"] for root in (single, ranked)]
    assert attrs[0] == attrs[1] and attrs[1]["summary"]["frames_done"] == 37

    again = _summary_line(run_torchrun(2, "teacher_server.cli", "precompute", "--store", str(ranked), *args).stdout)
    assert len(again) == 1 and "computed 0 frames (0 shards)" in again[0] and "37 already done" in again[0]
