"""Verification: find frames whose stored bytes are missing, truncated or fail their checksums."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import DataError
from shared.features import decode_chunk
from teacher_server.errors import CorruptFeatureError
from teacher_server.store import Collection, FeatureStore

__all__ = ["Damage", "damaged_shards", "verify_store"]


@dataclass(frozen=True)
class Damage:
    collection: str
    shard: int
    frame_id: str
    reason: str


def _check_shard(store: FeatureStore, col: Collection, shard: int) -> list[Damage]:
    from teacher_server.reader import ChunkReader

    reader = ChunkReader([store])
    found = []
    try:
        for row in col.shard_rows(shard):
            fid = col.ids[row]
            try:
                decode_chunk(reader.read(fid).data, col.shape, store.encoding)
            except (CorruptFeatureError, DataError) as e:
                found.append(Damage(col.name, shard, fid, str(e)))
    finally:
        reader.close()
    return found


def damaged_shards(store: FeatureStore, col: Collection, shards: Iterable[int]) -> list[int]:
    """Done shards among ``shards`` with at least one damaged frame."""
    return [k for k in shards if col.shard_done(k) and _check_shard(store, col, k)]


def verify_store(store: FeatureStore) -> list[Damage]:
    """Every damaged frame of every done shard (decodes each frame: zstd checksum + size)."""
    out: list[Damage] = []
    for col in store.collections.values():
        for k in range(col.n_shards):
            if col.shard_done(k):
                out += _check_shard(store, col, k)
    return out
