"""Helpers of the fault tests: whole-store snapshots (every file's bytes) and the precompute CLI's arguments."""

from __future__ import annotations

import json
from pathlib import Path

from tests.servers import args_of

LOCK_FILE = ".create.lock"


def precompute_args(store: Path, manifest: Path, ckpt: Path, shard_frames: int, batch_size: int) -> list[str]:
    """``teacher-server precompute`` arguments for a checkpoint teacher, in-process data loading."""
    return [*args_of(store=store, manifests=manifest, arch="checkpoint", weights=ckpt, shard_frames=shard_frames,
                     batch_size=batch_size, loader_workers=0, device="cpu"), "--no-progress"]


def partial_files(root: Path) -> list[str]:
    """Temp files of interrupted zarr writes (``*.partial``) under ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.partial"))


def store_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of a store by relative path: chunk and shard bytes, done bitmap, statistics, metadata.

    Leaves out the creation lock and temp files (a clean run never has any; see :func:`partial_files`).
    """
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE and not p.name.endswith(".partial")
    }


def assert_same_store(got: Path, clean: Path) -> dict[str, bytes]:
    """Fail naming the first file that differs between two stores; returns the clean snapshot."""
    a, b = store_snapshot(got), store_snapshot(clean)
    assert sorted(a) == sorted(b), f"file lists differ: {sorted(set(a) ^ set(b))}"
    differing = [k for k in b if a[k] != b[k]]
    assert not differing, f"{len(differing)} files differ from the clean run, e.g. {differing[:5]}"
    return b


def store_created(root: Path) -> bool:
    """True once ``create_or_open`` has listed a collection in the root attributes."""
    try:
        return bool(json.loads((root / "zarr.json").read_text())["attributes"]["xmodal"]["collections"])
    except (OSError, ValueError, KeyError):
        return False
