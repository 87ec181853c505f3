"""Verification: find frames whose stored bytes are missing, truncated or fail their checksums.

Frames are read through the serving path (:class:`ChunkReader`), so a local folder and an ``s3://`` store
are checked the same way: shard index CRC, then each frame's zstd checksum and decoded size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import DataError
from shared.features import decode_chunk
from teacher_server.errors import CorruptFeatureError
from teacher_server.reader import ChunkReader
from teacher_server.store import Collection, FeatureStore

__all__ = ["Damage", "damaged_shards", "verify_store"]


@dataclass(frozen=True)
class Damage:
    collection: str
    shard: int
    frame_id: str
    reason: str


def _check_shard(reader: ChunkReader, store: FeatureStore, col: Collection, shard: int) -> list[Damage]:
    found = []
    for row in col.shard_rows(shard):
        fid = col.ids[row]
        try:
            decode_chunk(reader.read(fid).data, col.shape, store.encoding)
        except (CorruptFeatureError, DataError) as e:
            found.append(Damage(col.name, shard, fid, str(e)))
    return found


def _damage(store: FeatureStore, cols_shards: Iterable[tuple[Collection, int]]) -> list[Damage]:
    """Damage of the done shards among ``cols_shards``, read by one reader (one index fetch per shard)."""
    reader = ChunkReader([store])
    try:
        return [d for col, k in cols_shards if col.shard_done(k) for d in _check_shard(reader, store, col, k)]
    finally:
        reader.close()


def damaged_shards(store: FeatureStore, col: Collection, shards: Iterable[int]) -> list[int]:
    """Done shards among ``shards`` with at least one damaged frame."""
    return sorted({d.shard for d in _damage(store, ((col, k) for k in shards))})


def verify_store(store: FeatureStore) -> list[Damage]:
    """Every damaged frame of every done shard (decodes each frame: zstd checksum + size)."""
    return _damage(store, ((col, k) for col in store.collections.values() for k in range(col.n_shards)))
