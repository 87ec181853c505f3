"""Disk full during precompute (simulated ENOSPC): clear error, consistent store, a rerun equals a clean run.

The simulation is a byte budget on every file opened for writing through ``Path.open`` (what zarr's
LocalStore uses for chunks, shards and metadata): past the budget, ``write`` stores what still fits and raises
``OSError(ENOSPC)``, as a full filesystem does. It runs in CI without root, unlike a small tmpfs.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from teacher_server.cli import main as teacher_server
from teacher_server.store import FeatureStore
from teacher_server.verify import verify_store
from tests.reliability.conftest import assert_same_store, partial_files, precompute_args
from tests.teacher_server.conftest import make_rgb_dataset

SHARD, BATCH = 4, 2
_REAL_OPEN = Path.open


@dataclass
class DiskBudget:
    """Bytes left on the simulated disk (None: unlimited) and the log of writes: (path, bytes)."""

    free: int | None = None
    writes: list[tuple[str, int]] = field(default_factory=list)

    def write(self, path: Path, fh, data) -> int:
        n = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if self.free is not None and n > self.free:
            fh.write(data[: self.free])  # a full disk takes what fits, then refuses
            self.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        if self.free is not None:
            self.free -= n
        self.writes.append((str(path), n))
        return fh.write(data)


class _BudgetedFile:
    def __init__(self, fh, path: Path, budget: DiskBudget) -> None:
        self._fh, self._path, self._budget = fh, path, budget

    def write(self, data) -> int:
        return self._budget.write(self._path, self._fh, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _run_on_disk(monkeypatch, budget: DiskBudget, argv: list[str]) -> int:
    def budgeted_open(path, mode="r", *args, **kwargs):
        fh = _REAL_OPEN(path, mode, *args, **kwargs)
        return _BudgetedFile(fh, path, budget) if set(mode) & set("wax+") else fh

    with monkeypatch.context() as m:
        m.setattr(Path, "open", budgeted_open)
        return teacher_server(argv)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, teacher_ckpt):
    """A clean precompute of 20 frames (5 shards) and the writes it made, in order."""
    root = tmp_path_factory.mktemp("disk_full")
    manifest = make_rgb_dataset(root / "d", n=20)
    budget = DiskBudget()
    with pytest.MonkeyPatch.context() as mp:
        assert _run_on_disk(mp, budget, ["precompute", *precompute_args(root / "clean", manifest, teacher_ckpt,
                                                                         SHARD, BATCH)]) == 0
    return manifest, root / "clean", budget.writes


# Which write the disk fills up in: shard 2's features, statistics or done bits, or the final summary.
FAULTS = {
    "features": lambda key: key.startswith("tiny/features/c/2/"),
    "shard_stats": lambda key: key.startswith("tiny/shard_stats/c/2/"),
    "done": lambda key: key.startswith("tiny/done/c/2."),
    "summary": lambda key: key.startswith("tiny/zarr."),
}


def _fill_disk_at(at: int, argv: list[str], store: Path, writes: list[tuple[str, int]], monkeypatch, capsys) -> None:
    """Run ``argv`` on a disk that fills up halfway through the clean run's write number ``at``; it must fail
    with exit code 2 and a one-line error naming the store, the cause and the cure."""
    free = sum(n for _, n in writes[:at]) + writes[at][1] // 2
    capsys.readouterr()
    assert _run_on_disk(monkeypatch, DiskBudget(free), argv) == 2
    err = capsys.readouterr().err
    assert f"store {store}" in err and "no space left" in err.lower() and "rerun" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("fault", FAULTS)
def test_disk_full_is_clear_consistent_and_resumable(fault, tmp_path, teacher_ckpt, clean_run, monkeypatch, capsys):
    manifest, clean, writes = clean_run
    argv = ["precompute", *precompute_args(tmp_path / "s", manifest, teacher_ckpt, SHARD, BATCH)]
    keys = [Path(p).relative_to(clean).as_posix() for p, _ in writes]
    at = max(i for i, k in enumerate(keys) if FAULTS[fault](k))  # the last such write: after store creation
    _fill_disk_at(at, argv, tmp_path / "s", writes, monkeypatch, capsys)

    store = FeatureStore.open(tmp_path / "s")
    col = store.collections["tiny"]
    done = col.done()
    assert verify_store(store) == []  # everything marked done decodes and passes its checksums
    ref = FeatureStore.open(clean).collections["tiny"].read(slice(None))
    np.testing.assert_array_equal(col.read(np.flatnonzero(done).tolist()), ref[done])  # done = durably written
    # Shards 0-1 were written before the disk filled; all of them only when it filled at the summary.
    assert done.tolist() == [True] * (20 if fault == "summary" else 8) + [False] * (0 if fault == "summary" else 12)
    assert partial_files(tmp_path / "s") == []

    assert teacher_server(argv) == 0  # space freed: the same command resumes
    assert_same_store(tmp_path / "s", clean)


# Which write of the store's creation the disk fills up in: the first (root metadata) or the frame ids chunk.
CREATION_FAULTS = {
    "root_metadata": lambda key: key.startswith("zarr."),
    "ids": lambda key: key.startswith("tiny/ids/c"),
}


@pytest.mark.parametrize("fault", CREATION_FAULTS)
def test_disk_full_while_the_store_is_created(fault, tmp_path, teacher_ckpt, clean_run, monkeypatch, capsys):
    manifest, clean, writes = clean_run
    argv = ["precompute", *precompute_args(tmp_path / "s", manifest, teacher_ckpt, SHARD, BATCH)]
    keys = [Path(p).relative_to(clean).as_posix() for p, _ in writes]
    at = next(i for i, k in enumerate(keys) if CREATION_FAULTS[fault](k))  # the first such write: creation
    assert not any(k.startswith("tiny/features/c/") for k in keys[:at])  # no shard written yet
    _fill_disk_at(at, argv, tmp_path / "s", writes, monkeypatch, capsys)

    assert teacher_server(argv) == 0  # space freed: the same command creates the rest and computes everything
    assert_same_store(tmp_path / "s", clean)
