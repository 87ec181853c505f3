"""Fixtures: a small RGB dataset and a precomputed store (the checkpoint teacher is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.features import encoding
from shared.imageio import write_image
from shared.manifest import FrameRecord, ManifestHeader, write_manifest
from shared.nets.teachers import IMAGENET_MEAN, IMAGENET_STD
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from teacher_server.precompute import precompute
from teacher_server.store import FeatureStore

N_FRAMES = 37  # not a multiple of the shard size: the last shard is partial
SHARD = 8


def make_rgb_dataset(root: Path, n: int = N_FRAMES, dataset: str = "tiny", hw=(64, 80)) -> Path:
    """Frames of smooth random colour blobs (structure at several scales, so pool5 is not all zeros)."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        small = rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
        img = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        write_image(root / "rgb" / f"{i:04d}.png", img)
        frames.append(FrameRecord(id=f"{dataset}.{i:04d}", split="train" if i % 4 else "test", rgb=f"rgb/{i:04d}.png"))
    return write_manifest(root / "manifest.jsonl", ManifestHeader(dataset=dataset), frames)


def make_teacher_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    trunk = AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)).eval()
    torch.save({"model": trunk.state_dict(), "trunk": trunk.describe(IMAGENET_MEAN, IMAGENET_STD)}, path)
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return make_rgb_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def store_path(tmp_path_factory, dataset, teacher) -> Path:
    path = tmp_path_factory.mktemp("store") / "features"
    precompute(path, [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD, batch_size=5,
               loader_workers=0, progress=False)
    return path


@pytest.fixture(scope="module")
def reference(store_path) -> dict[str, np.ndarray]:
    """Every map of ``store_path``, read in process: {frame id: (C, H, W) float32}."""
    col = FeatureStore.open(store_path).collections["tiny"]
    return dict(zip(col.ids, col.read(slice(None)), strict=True))
