"""``teacher_server.shard_encode``: a whole shard encoded without zarr's async pipeline is byte for byte what zarr
writes, for every encoding, full and partial shards, and reads back through zarr and the server's reader."""

from __future__ import annotations

import numpy as np
import pytest

from shared.features import ENCODINGS, VIEWS, decode_chunk
from shared.identity import TeacherIdentity
from teacher_server import shard_encode
from teacher_server.reader import ChunkReader
from teacher_server.store import CollectionSpec, FeatureStore, shard_statistics

N, SHARD, SHAPE = 21, 8, (5, 3, 4)  # 3 shards, the last one partial (5 rows)


def _store(path, enc):
    ident = TeacherIdentity(arch="test", weights="random", weights_digest="0" * 64, out_channels=SHAPE[0],
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    spec = CollectionSpec(name="t", ids=tuple(f"t.{i:04d}" for i in range(N)), shape=SHAPE, input_size=(24, 32),
                          views=VIEWS)
    return FeatureStore.create_or_open(path, ident, enc, [spec], SHARD).collections["t"]


def _maps(enc) -> np.ndarray:
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.standard_normal((N, len(VIEWS), *SHAPE), dtype=np.float32), 0)
    maps[3] = 0  # an all-zero map is still a stored chunk
    return maps.astype(enc.dtype)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_shard_bytes_are_zarrs_for_every_encoding(tmp_path, name):
    enc = ENCODINGS[name]
    maps = _maps(enc)
    by_zarr, by_us = _store(tmp_path / "zarr", enc), _store(tmp_path / "ours", enc)
    for k in range(by_zarr.n_shards):
        rows = by_zarr.shard_rows(k)
        part = maps[rows.start : rows.stop]
        by_zarr.features.with_config({"write_empty_chunks": True})[rows.start : rows.stop] = part
        assert shard_encode.write_full_shard(by_us.features, k, part)
        key = by_zarr.shard_key(k)
        assert (tmp_path / "ours" / key).read_bytes() == (tmp_path / "zarr" / key).read_bytes(), f"shard {k}"
    col = FeatureStore.open(tmp_path / "ours").collections["t"]
    for v, view in enumerate(VIEWS):  # what the encoding stores (a quantised one: its round trip)
        np.testing.assert_array_equal(col.read(slice(None), view=view), enc.roundtrip(maps[:, v]))


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_written_shards_are_served_all_zero_maps_included(tmp_path, name):
    """Through ``Collection.write_shard`` (the precompute path): every frame reads back through the server's reader,
    the all-zero map too (zarr's own path, without write_empty_chunks, stored no chunk for it: the reader then
    answered corrupt_feature for a done frame)."""
    enc = ENCODINGS[name]
    maps = _maps(enc)
    col = _store(tmp_path / "s", enc)
    for k in range(col.n_shards):
        rows = col.shard_rows(k)
        part = maps[rows.start : rows.stop]
        col.write_shard(k, part, shard_statistics(part[:, 0].astype(np.float32), part[:, 0].astype(np.float32)))
    store = FeatureStore.open(tmp_path / "s")
    reader = ChunkReader([store])
    try:
        for i in range(N):
            for v, view in enumerate(VIEWS):
                chunk = reader.read(f"t.{i:04d}", view=view)
                np.testing.assert_array_equal(decode_chunk(chunk.data, chunk.shape, store.encoding),
                                              enc.roundtrip(maps[i, v]))
    finally:
        reader.close()


def test_data_that_is_not_one_shard_is_refused(tmp_path):
    col = _store(tmp_path / "s", ENCODINGS["f32-zstd1"])
    maps = _maps(ENCODINGS["f32-zstd1"])
    with pytest.raises(ValueError, match=r"shard 2 of .* takes \(5, 2, 5, 3, 4\) float32, got \(8, 2, 5, 3, 4\)"):
        shard_encode.write_full_shard(col.features, 2, maps[:8])
    with pytest.raises(ValueError, match="float64"):
        shard_encode.write_full_shard(col.features, 0, maps[:8].astype(np.float64))


def test_a_codec_without_synchronous_encode_leaves_the_shard_to_zarr(tmp_path, monkeypatch):
    col = _store(tmp_path / "s", ENCODINGS["f32-zstd1"])
    sharding = col.features.metadata.codecs[0]
    zstd = next(c for c in sharding.codecs if type(c).__name__ == "ZstdCodec")
    monkeypatch.setattr(type(zstd), "_encode_sync", None)  # as a codec with only the async path would be
    assert shard_encode.encode_full_shard(col.features, 0, _maps(ENCODINGS["f32-zstd1"])[:8]) is None
    assert not shard_encode.write_full_shard(col.features, 0, _maps(ENCODINGS["f32-zstd1"])[:8])
    assert not (tmp_path / "s" / col.shard_key(0)).exists()
