"""Store integrity: a damaged byte is never served as success; damaged shards and metadata are found, named and
repaired (issue 14, points 1-3)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.client import TeacherClient
from shared.errors import CorruptFeatureError, DataError
from shared.features import decode_batch, encoding
from teacher_server.app import create_app, open_reader
from teacher_server.precompute import precompute
from teacher_server.settings import ServeSettings
from teacher_server.shard_index import open_shard
from teacher_server.store import FeatureStore, StoreDamagedError
from teacher_server.verify import verify_store
from tests.servers import run_cli, uvicorn_thread
from tests.teacher_server.conftest import SHARD, make_rgb_dataset

ENC = encoding("f32-zstd1")


@pytest.fixture()
def store(tmp_path, store_path) -> Path:
    """A private copy of the session store (37 frames ``tiny.0000``.., 8-frame shards)."""
    shutil.copytree(store_path, tmp_path / "s")
    return tmp_path / "s"


def _flip_chunk_byte(store: Path, row: int) -> None:
    """Flip one byte in the middle of frame ``row``'s chunk (inside the zstd data, not the shard index)."""
    col = FeatureStore.open(store).collections["tiny"]
    shard, j = divmod(row, col.shard_frames)
    opened = open_shard(col.objects, col.shard_key(shard), col.entries_per_shard)
    offset, nbytes = opened.entry(j * len(col.views))  # the identity view
    opened.blob.close()
    path = store / col.shard_key(shard)
    data = bytearray(path.read_bytes())
    data[offset + nbytes // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _metric(url: str, name: str, code: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'{name}{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


def _recompute(store: Path, dataset: Path, teacher, repair: bool = False):
    return precompute(store, [dataset], teacher, ENC, shard_frames=SHARD, batch_size=5, loader_workers=0,
                      repair=repair, progress=False)


def _same_as(store: Path, reference: Path) -> None:
    a, b = FeatureStore.open(store).collections["tiny"], FeatureStore.open(reference).collections["tiny"]
    np.testing.assert_array_equal(a.read(slice(None)), b.read(slice(None)))
    assert a.done().all() and a.ids == b.ids
    assert verify_store(FeatureStore.open(store)) == []


# ------------------------------------------------------------------------------------------------ feature chunks


def test_a_flipped_chunk_byte_is_corrupt_feature_everywhere(store, dataset, teacher, store_path):
    _flip_chunk_byte(store, 10)  # tiny.0010, shard 1
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        r = httpx.get(f"{url}/features/tiny.0010")
        assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_feature"
        assert "tiny.0010" in r.json()["error"]["message"] and "CRC32C" in r.json()["error"]["message"]
        npy = httpx.get(f"{url}/features/tiny.0010?format=npy")
        assert npy.status_code == 500 and npy.json()["error"]["code"] == "corrupt_feature"
        assert _metric(url, "teacher_errors_total", "corrupt_feature") == 2
        assert httpx.get(f"{url}/features/tiny.0011").status_code == 200  # the shard's other frames are fine
        batch = decode_batch(httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0009", "tiny.0010",
                                                                           "tiny.0011"]}).content)
        assert [(e.status, e.code) for e in batch] == [(200, None), (500, "corrupt_feature"), (200, None)]
        assert _metric(url, "teacher_batch_frame_errors_total", "corrupt_feature") == 1
        with TeacherClient(url, wait=0) as c, pytest.raises(CorruptFeatureError, match=f"tiny.0010.*{url}"):
            c.get_many(["tiny.0009", "tiny.0010"])
    found = verify_store(FeatureStore.open(store))
    assert [(d.shard, d.frame_id) for d in found] == [(1, "tiny.0010")]
    assert "CRC32C" in found[0].reason
    summary = _recompute(store, dataset, teacher)  # a plain rerun checks structure only: the index is fine
    assert summary.shards_written == 0
    assert _recompute(store, dataset, teacher, repair=True).shards_written == 1
    _same_as(store, store_path)


def test_the_client_names_frame_server_and_teacher_when_bytes_do_not_decode(tmp_path):
    """A version-1 store has no chunk CRC: damage reaches the client, whose error must say what and where."""
    old = tmp_path / "v1"
    shutil.copytree(Path(__file__).parents[1] / "data" / "store_v1", old)
    path = old / "old" / "features" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside frame 0's zstd frame
    path.write_bytes(bytes(data))
    with uvicorn_thread(create_app(ServeSettings(stores=[old]))) as url, TeacherClient(url, wait=0) as c:
        assert httpx.get(f"{url}/features/old.0000").status_code == 200  # served as stored: nothing to check
        for fetch in (lambda: c.get("old.0000"), lambda: c.get_many(["old.0001", "old.0000"])):
            with pytest.raises(DataError) as err:
                fetch()
            assert "old.0000" in str(err.value) and url in str(err.value) and c.teacher_id in str(err.value)
        npy = httpx.get(f"{url}/features/old.0000?format=npy")
        assert npy.status_code == 500 and npy.json()["error"]["code"] == "corrupt_feature"
    assert {d.frame_id for d in verify_store(FeatureStore.open(old))} == {"old.0000"}


# ------------------------------------------------------------------------------------------------ whole shards


def test_a_shard_replaced_by_a_folder_is_per_frame_damage_and_is_rewritten(store, dataset, teacher, store_path):
    col = FeatureStore.open(store).collections["tiny"]
    shard_file = store / col.shard_key(2)
    shard_file.unlink()
    shard_file.mkdir()
    (shard_file / "junk").write_text("x")
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        r = httpx.get(f"{url}/features/tiny.0017")
        assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_feature"
        assert "IsADirectoryError" in r.json()["error"]["message"]
        batch = decode_batch(httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001", "tiny.0017"]}).content)
        assert [e.status for e in batch] == [200, 500]
    found = verify_store(FeatureStore.open(store))
    assert {d.frame_id for d in found} == {f"tiny.{i:04d}" for i in range(16, 24)}
    assert run_cli("teacher_server.cli", "verify", "--store", str(store), check=False).returncode == 2
    summary = _recompute(store, dataset, teacher)  # a plain rerun must not report these frames as done
    assert summary.shards_written == 1 and summary.frames_computed == 8
    _same_as(store, store_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_shard_is_per_frame_damage(store, dataset, teacher, store_path):
    col = FeatureStore.open(store).collections["tiny"]
    (store / col.shard_key(0)).chmod(0)
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        r = httpx.get(f"{url}/features/tiny.0003")
        assert r.status_code == 500 and "PermissionError" in r.json()["error"]["message"]
    assert len(verify_store(FeatureStore.open(store))) == 8
    assert _recompute(store, dataset, teacher).shards_written == 1
    _same_as(store, store_path)


# ------------------------------------------------------------------------------------------------ metadata


def _flip_file_byte(path: Path, offset: int = -6) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_ids_never_renames_a_frame(store, dataset, teacher, store_path):
    _flip_file_byte(store / "tiny" / "ids" / "c" / "0", 10)
    with pytest.raises(StoreDamagedError, match=r"ids.*--repair"):
        FeatureStore.open(store)
    with pytest.raises(StoreDamagedError):
        open_reader(ServeSettings(stores=[store]))  # the server refuses to start rather than serve under wrong ids
    proc = run_cli("teacher_server.cli", "verify", "--store", str(store), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "ids" in proc.stderr
    assert _recompute(store, dataset, teacher, repair=True).shards_written == 0  # ids rebuilt from the manifest
    _same_as(store, store_path)


def test_repair_refuses_other_manifests_when_the_ids_are_damaged(store, tmp_path, teacher):
    _flip_file_byte(store / "tiny" / "ids" / "c" / "0", 10)
    other = make_rgb_dataset(tmp_path / "other", n=37, dataset="tiny", hw=(64, 80))
    lines = other.read_text().splitlines()
    other.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")  # frames 0 and 1 swapped
    with pytest.raises(Exception, match="same manifests"):
        _recompute(store, other, teacher, repair=True)


def test_a_damaged_done_chunk_costs_only_its_shard(store, dataset, teacher, store_path):
    _flip_file_byte(store / "tiny" / "done" / "c" / "1", 2)
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        bad = httpx.get(f"{url}/features/tiny.0009")
        assert bad.status_code == 500 and "done bitmap" in bad.json()["error"]["message"]
        assert httpx.get(f"{url}/features/tiny.0001").status_code == 200
    found = verify_store(FeatureStore.open(store))
    assert [(d.shard, d.frame_id) for d in found] == [(1, None)] and "done-bitmap" in found[0].reason
    assert _recompute(store, dataset, teacher, repair=True).shards_written == 0  # bits rebuilt, bytes checked
    _same_as(store, store_path)
    _flip_file_byte(store / "tiny" / "done" / "c" / "1", 2)
    assert _recompute(store, dataset, teacher).shards_written == 1  # without --repair: recomputed, no crash
    _same_as(store, store_path)


def test_a_deleted_statistics_chunk_is_reported_and_restored(store, dataset, teacher, store_path):
    (store / "tiny" / "shard_stats" / "c" / "3" / "0").unlink()
    stats = FeatureStore.open(store).collections["tiny"].summary()
    assert stats["stats_missing_shards"] == [3] and stats["stats_frames"] == 37 - 8 and stats["frames_done"] == 37
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        assert httpx.get(f"{url}/info").json()["collections"]["tiny"]["stats"]["stats_missing_shards"] == [3]
    found = verify_store(FeatureStore.open(store))
    assert [(d.shard, d.frame_id) for d in found] == [(3, None)] and "statistics" in found[0].reason
    assert _recompute(store, dataset, teacher).shards_written == 1
    assert "stats_missing_shards" not in FeatureStore.open(store).collections["tiny"].summary()
    _same_as(store, store_path)


@pytest.mark.parametrize("damage", ["truncated root zarr.json", "edited root attributes", "missing features/zarr.json",
                                    "truncated collection zarr.json"])
def test_damaged_metadata_documents_are_named_and_rebuilt(store, dataset, teacher, store_path, damage):
    if damage == "truncated root zarr.json":
        path = store / "zarr.json"
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "edited root attributes":
        doc = json.loads((store / "zarr.json").read_text())
        doc["attributes"]["xmodal"]["teacher"]["weights"] = "other"
        (store / "zarr.json").write_text(json.dumps(doc))
    elif damage == "missing features/zarr.json":
        (store / "tiny" / "features" / "zarr.json").unlink()
    else:
        path = store / "tiny" / "zarr.json"
        path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(StoreDamagedError, match="--repair") as err:
        FeatureStore.open(store)
    assert str(store) in str(err.value)
    proc = run_cli("teacher_server.cli", "verify", "--store", str(store), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--repair" in proc.stderr
    with pytest.raises(StoreDamagedError):
        _recompute(store, dataset, teacher)  # a plain run never writes into a store it cannot read
    assert _recompute(store, dataset, teacher, repair=True).shards_written == 0
    _same_as(store, store_path)


def test_verify_checks_the_ids_against_the_manifests(store, dataset, tmp_path):
    assert verify_store(FeatureStore.open(store), [dataset]) == []
    other = make_rgb_dataset(tmp_path / "other", n=36, dataset="tiny", hw=(64, 80))
    found = verify_store(FeatureStore.open(store), [other])
    assert len(found) == 1 and found[0].shard is None and "37 vs 36" in found[0].reason
    proc = run_cli("teacher_server.cli", "verify", "--store", str(store), "--manifests", str(other), check=False)
    assert proc.returncode == 2 and "ids differ" in proc.stdout
