"""Quantised encodings end to end: precompute writes them through zarr, the server sends the stored bytes as they
are, clients decode exactly what zarr reads, the statistics record the error, and verify / repair still work."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest

from shared.client import TeacherClient
from shared.errors import DataError
from shared.features import ENCODINGS, FeatureEncoding, decode_batch, decode_chunk, encoding
from shared.quantize import quantize
from teacher_server.app import create_app
from teacher_server.precompute import precompute
from teacher_server.settings import PrecomputeSettings, ServeSettings
from teacher_server.store import FeatureStore
from teacher_server.verify import verify_store
from tests.servers import run_cli, uvicorn_thread
from tests.teacher_server.conftest import SHARD
from tests.teacher_server.test_precompute import teacher_forward


@pytest.fixture(scope="module", params=["q8-zstd1", "q10-zstd1"])
def quantized(request, tmp_path_factory, dataset, teacher):
    """(encoding name, store path, the teacher's own float32 maps per frame id: both views)."""
    path = tmp_path_factory.mktemp(request.param) / "store"
    precompute(path, [dataset], teacher, encoding(request.param), shard_frames=SHARD, batch_size=5,
               loader_workers=0, progress=False)
    return request.param, path, teacher_forward(teacher, dataset)


def test_store_holds_the_quantised_teacher_maps(quantized, store_path):
    name, path, expected = quantized
    enc = encoding(name)
    store = FeatureStore.open(path)
    col = store.collections["tiny"]
    assert store.encoding == enc and col.done().all()
    got = col.read(slice(None))  # through zarr and its xmodal.quantize codec
    ref = np.stack(list(expected.values()))  # one frame at a time: equal to precompute's batches within ~1e-5
    steps = np.stack([np.asarray(quantize(m, enc.quantizer)[0], np.float64) for m in ref])
    err = np.abs(got.astype(np.float64) - ref)
    assert (err <= 0.5 * steps[..., None, None] + 1e-4).all()
    summary = col.summary()
    assert summary["max_abs_error"] == pytest.approx(err.max(), abs=1e-4) and summary["max_abs_error"] > 0
    peak = np.abs(ref).reshape(len(ref), -1).max(axis=1)
    assert summary["max_relative_error"] == pytest.approx((err.reshape(len(ref), -1).max(axis=1) / peak).max(),
                                                          abs=1e-4)
    assert 0 < summary["max_relative_error"] <= 0.5 / (2 ** enc.quantizer.bits - 1) * 1.001
    assert (got[ref == 0] == 0).all()  # ReLU zeros stay exact
    mirror = col.read(slice(None), view="mirror")
    assert mirror.shape == got.shape and not np.array_equal(mirror, got)
    lossless = FeatureStore.open(store_path).collections["tiny"].summary()
    assert summary["compression_ratio"] > 1.8 * lossless["compression_ratio"]
    assert verify_store(store) == []


def test_served_chunks_decode_to_what_zarr_reads(quantized):
    name, path, _ = quantized
    enc = encoding(name)
    col = FeatureStore.open(path).collections["tiny"]
    reference = dict(zip(col.ids, col.read(slice(None)), strict=True))
    with uvicorn_thread(create_app(ServeSettings(stores=[path]))) as url:
        info = httpx.get(f"{url}/info").json()
        assert FeatureEncoding.from_dict(info["encoding"]) == enc and "quantize=" in info["codec"]
        r = httpx.get(f"{url}/features/tiny.0007")
        assert r.headers["x-feature-codec"] == enc.header() and r.headers["x-feature-dtype"] == "float32"
        np.testing.assert_array_equal(decode_chunk(r.content, col.shape, enc), reference["tiny.0007"])
        npy = httpx.get(f"{url}/features/tiny.0007", params={"format": "npy"})
        np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), reference["tiny.0007"])
        batch = httpx.post(f"{url}/features/batch", json={"ids": list(reference)})
        for entry in decode_batch(batch.content):
            np.testing.assert_array_equal(decode_chunk(entry.data, entry.shape, enc), reference[entry.id])
        with TeacherClient(url) as client:
            assert client.encoding == enc
            np.testing.assert_array_equal(client.get_many(list(reference)), np.stack(list(reference.values())))
            np.testing.assert_array_equal(client.get("tiny.0003"), reference["tiny.0003"])
            np.testing.assert_array_equal(client.get("tiny.0003", view="mirror"),
                                          col.read([3], view="mirror")[0])


def test_precompute_offers_every_registered_encoding(tmp_path, dataset):
    for name in ENCODINGS:
        assert PrecomputeSettings(store=str(tmp_path), manifests=[dataset], encoding=name).encoding == name
    with pytest.raises(ValueError, match="q10-zstd1"):
        PrecomputeSettings(store=str(tmp_path), manifests=[dataset], encoding="q9")
    out = run_cli("teacher_server.cli", "precompute", "--store", str(tmp_path / "t"), "--manifests", str(dataset),
                  "--encoding", "q7-zstd1", check=False)
    assert out.returncode != 0 and "q8-zstd1" in out.stderr and "q7-zstd1" in out.stderr


def test_maps_that_cannot_be_quantised_fail_naming_the_frames(tmp_path, dataset, teacher, monkeypatch):
    """A NaN in the teacher's output (a diverged checkpoint) stops precompute with the shard's frames named and
    nothing of that shard marked done."""
    forward = teacher.trunk.forward

    def nan_forward(x):
        y = forward(x)
        y[0, 0, 0, 0] = float("nan")
        return y

    monkeypatch.setattr(teacher.trunk, "forward", nan_forward)
    with pytest.raises(DataError, match=r"shard 0 of 'tiny' \(frames tiny\.0000\.\.tiny\.0007\).*non-finite"):
        precompute(tmp_path / "s", [dataset], teacher, encoding("q8-zstd1"), shard_frames=SHARD, batch_size=8,
                   loader_workers=0, progress=False)
    assert not FeatureStore.open(tmp_path / "s").collections["tiny"].done().any()


def test_zarr_metadata_names_the_codec(quantized):
    name, path, _ = quantized
    meta = json.loads((path / "tiny" / "features" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner[0] == {"name": "xmodal.quantize", "configuration": encoding(name).quantizer.to_dict()}
    assert [c["name"] for c in inner[1:]] == ["zstd", "crc32c"]
