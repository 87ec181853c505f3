import shutil
import time

import numpy as np
import pytest
import torch

from shared.errors import DataError, ImageReadError
from shared.features import encoding
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from shared.nets.teachers import load_teacher
from teacher_server.precompute import WorkerSlot, precompute
from teacher_server.store import FeatureStore, StoreMismatchError
from tests.servers import args_of, cli, kill9, run_cli
from tests.teacher_server.conftest import SHARD, make_rgb_dataset, make_teacher_checkpoint


def _shard_done(col, shard: int) -> bool:
    """Every frame of ``shard`` marked done (unreadable bitmap chunks read as not done)."""
    return bool(col.done()[col.shard_rows(shard).start : col.shard_rows(shard).stop].all())


def teacher_forward(teacher, manifest_path) -> dict[str, np.ndarray]:
    """The teacher's own pool5 per frame, one frame at a time (independent of precompute's batching)."""
    m = read_manifest(manifest_path)
    mean = torch.tensor(teacher.identity.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.identity.std).view(1, 3, 1, 1)
    out = {}
    with torch.inference_mode():
        for f in m:
            x = torch.from_numpy(read_rgb(m.path(f.rgb))).permute(2, 0, 1)[None].float() / 255
            out[f.id] = teacher.trunk((x - mean) / std)[0].numpy()
    return out


def store_arrays(path) -> dict[str, np.ndarray]:
    store = FeatureStore.open(path)
    col = next(iter(store.collections.values()))
    feats = col.read(slice(None))
    return {fid: feats[i] for i, fid in enumerate(col.ids)}


def test_store_equals_teacher_output(store_path, dataset, teacher):
    expected = teacher_forward(teacher, dataset)
    got = store_arrays(store_path)
    assert got.keys() == expected.keys()
    for fid, ref in expected.items():
        np.testing.assert_allclose(got[fid], ref, rtol=1e-5, atol=1e-5, err_msg=fid)
    store = FeatureStore.open(store_path)
    col = store.collections["tiny"]
    assert col.done().all() and col.n_shards == 5
    summary = col.summary()
    assert summary["frames_done"] == 37 and summary["max_abs_error"] == 0.0
    assert summary["compression_ratio"] > 1.0
    norms = [np.linalg.norm(v) for v in expected.values()]
    assert summary["mean_l2_norm"] == pytest.approx(np.mean(norms), rel=1e-4)
    assert store.teacher == teacher.identity
    assert (store_path / "tiny" / "zarr.json").is_file()


def test_float16_encoding_error_within_stated_bound(tmp_path, dataset, teacher):
    precompute(tmp_path / "s", [dataset], teacher, encoding("f16-zstd1"), shard_frames=16, loader_workers=0,
               progress=False)
    expected = teacher_forward(teacher, dataset)
    got = store_arrays(tmp_path / "s")
    for fid, ref in expected.items():
        peak = np.abs(ref).max()
        assert np.abs(got[fid] - ref).max() <= peak * 2.0**-11 + 1e-6
    summary = FeatureStore.open(tmp_path / "s").collections["tiny"].summary()
    assert 0 < summary["max_relative_error"] <= 2.0**-11


def test_rerun_skips_done_and_mismatched_teacher_is_refused(tmp_path, dataset, teacher):
    s1 = precompute(tmp_path / "s", [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD,
                    loader_workers=0, progress=False)
    s2 = precompute(tmp_path / "s", [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD,
                    loader_workers=0, progress=False)
    assert (s1.frames_computed, s2.frames_computed, s2.frames_skipped) == (37, 0, 37)
    other = load_teacher("checkpoint", str(make_teacher_checkpoint(tmp_path / "t2.pt", seed=5)))
    with pytest.raises(StoreMismatchError, match="holds features of teacher"):
        precompute(tmp_path / "s", [dataset], other, encoding("f32-zstd1"), progress=False, loader_workers=0)
    with pytest.raises(StoreMismatchError, match="encoding"):
        precompute(tmp_path / "s", [dataset], teacher, encoding("f16-zstd1"), progress=False, loader_workers=0)


def test_worker_slots_split_shards(tmp_path, dataset, teacher, store_path):
    for i in (1, 0):  # any order; each owns whole shards
        precompute(tmp_path / "s", [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD,
                   loader_workers=0, worker=WorkerSlot(i, 2), progress=False)
        col = FeatureStore.open(tmp_path / "s").collections["tiny"]
        done_shards = [k for k in range(col.n_shards) if _shard_done(col, k)]
        assert done_shards == ([1, 3] if i == 1 else [0, 1, 2, 3, 4])
    a, b = store_arrays(tmp_path / "s"), store_arrays(store_path)
    assert all(np.array_equal(a[k], b[k]) for k in b)
    with pytest.raises(ValueError, match="i/n"):
        WorkerSlot.parse("2")
    with pytest.raises(ValueError, match="0 <= i < n"):
        WorkerSlot.parse("3/2")


def test_corrupt_image_fails_naming_file_and_marks_nothing_done(tmp_path, teacher):
    manifest = make_rgb_dataset(tmp_path / "d", n=12)
    (tmp_path / "d" / "rgb" / "0009.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match=r"0009\.png"):
        precompute(tmp_path / "s", [manifest], teacher, encoding("f32-zstd1"), shard_frames=4, batch_size=2,
                   loader_workers=0, progress=False)
    col = FeatureStore.open(tmp_path / "s").collections["tiny"]
    assert [_shard_done(col, k) for k in range(3)] == [True, True, False]
    assert not col.done()[8:].any()


def test_mixed_sizes_need_input_size(tmp_path, teacher):
    manifest = make_rgb_dataset(tmp_path / "d", n=4)
    shutil.copy(tmp_path / "d" / "rgb" / "0000.png", tmp_path / "keep.png")
    from shared.imageio import write_image

    write_image(tmp_path / "d" / "rgb" / "0002.png", np.zeros((50, 60, 3), np.uint8))
    with pytest.raises(DataError, match=r"0002.png is 50x60 .* --input-size"):
        precompute(tmp_path / "s", [manifest], teacher, encoding("f32-zstd1"), loader_workers=0, progress=False)
    summary = precompute(tmp_path / "s2", [manifest], teacher, encoding("f32-zstd1"), input_size=(64, 80),
                         loader_workers=0, progress=False)
    assert summary.frames_computed == 4


def _cli_args(store, manifest, ckpt, **extra):
    return [*args_of(store=store, manifests=manifest, arch="checkpoint", weights=ckpt, shard_frames=2, batch_size=1,
                     loader_workers=0, **extra), "--no-progress"]


@pytest.mark.slow
def test_kill9_during_precompute_then_resume_equals_clean_run(tmp_path, teacher_ckpt, teacher):
    manifest = make_rgb_dataset(tmp_path / "d", n=120, hw=(128, 160))
    clean = tmp_path / "clean"
    run_cli("teacher_server.cli", "precompute", *_cli_args(clean, manifest, teacher_ckpt))
    store = tmp_path / "killed"
    rng = np.random.default_rng(1)
    interrupted = 0
    for _ in range(3):
        proc = cli("teacher_server.cli", "precompute", *_cli_args(store, manifest, teacher_ckpt))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (store / "tiny" / "done" / "c").is_dir():
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            interrupted += 1
        kill9(proc)
    run_cli("teacher_server.cli", "precompute", *_cli_args(store, manifest, teacher_ckpt))
    assert interrupted >= 1
    a, b = store_arrays(store), store_arrays(clean)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)
    assert FeatureStore.open(store).collections["tiny"].done().all()
    assert run_cli("teacher_server.cli", "verify", "--store", str(store)).returncode == 0


@pytest.mark.slow
def test_two_worker_processes_fill_one_store(tmp_path, teacher_ckpt, teacher, dataset):
    store = tmp_path / "s"
    procs = [cli("teacher_server.cli", "precompute", *_cli_args(store, dataset, teacher_ckpt, worker=f"{i}/2"))
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    precompute(tmp_path / "ref", [dataset], teacher, encoding("f32-zstd1"), shard_frames=2, batch_size=1,
               loader_workers=0, progress=False)
    a, b = store_arrays(store), store_arrays(tmp_path / "ref")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in b)
