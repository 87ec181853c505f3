"""Stores written before format version 2 stay readable, and migrate into version 2 with identical values."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.client import TeacherClient
from teacher_server.app import create_app
from teacher_server.migrate import migrate_store
from teacher_server.settings import ServeSettings
from teacher_server.store import STORE_VERSION, FeatureStore
from teacher_server.verify import verify_store
from tests.servers import run_cli, uvicorn_thread

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture()
def v1(tmp_path) -> Path:
    shutil.copytree(DATA / "store_v1", tmp_path / "v1")
    return tmp_path / "v1"


def test_a_version_1_store_is_served_and_verified_as_it_is(v1):
    expected = np.load(DATA / "store_v1_expected.npy")
    store = FeatureStore.open(v1)
    assert store.version == 1 and not store.encoding.crc32c
    assert verify_store(store) == []
    with uvicorn_thread(create_app(ServeSettings(stores=[v1]))) as url, TeacherClient(url) as c:
        np.testing.assert_array_equal(c.get_many([f"old.{i:04d}" for i in range(12)]), expected)
        assert httpx.get(f"{url}/info").json()["codec"] == "zstd;level=1;checksum=1"


def test_migrate_copies_a_version_1_store_bit_for_bit_and_resumes(v1, tmp_path):
    out = tmp_path / "v2"
    assert migrate_store(v1, out, progress=False) == (2, 0)
    new = FeatureStore.open(out)
    assert new.version == STORE_VERSION and new.encoding.crc32c
    assert new.teacher == FeatureStore.open(v1).teacher
    np.testing.assert_array_equal(new.collections["old"].read(slice(None)), np.load(DATA / "store_v1_expected.npy"))
    assert verify_store(new) == []
    old_stats = FeatureStore.open(v1).collections["old"].summary()
    new_stats = new.collections["old"].summary()
    assert new_stats["mean_l2_norm"] == old_stats["mean_l2_norm"] and new_stats["frames_done"] == 12
    assert migrate_store(v1, out, progress=False) == (0, 2)
    proc = run_cli("teacher_server.cli", "migrate", "--store", str(out), "--out", str(tmp_path / "v3"), check=False)
    assert proc.returncode == 2 and "already a version-2 store" in proc.stderr


def test_precompute_into_a_version_1_store_says_how_to_migrate(v1, tmp_path):
    from tests.teacher_server.conftest import make_rgb_dataset, make_teacher_checkpoint

    manifest = make_rgb_dataset(tmp_path / "data", n=12, dataset="old")
    ckpt = make_teacher_checkpoint(tmp_path / "t.pt", seed=5)
    proc = run_cli("teacher_server.cli", "precompute", "--store", str(v1), "--manifests", str(manifest), "--arch",
                   "checkpoint", "--weights", str(ckpt), "--loader-workers", "0", "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "teacher-server migrate" in proc.stderr
