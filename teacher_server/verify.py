"""Verification: find what of a store is missing, unreadable or fails its checksums.

Per done shard: the shard object opens and its index passes its CRC32C; every frame's chunk lies inside it and
passes its CRC32C (version 2; version-1 chunks are decoded: zstd checksum + size); its statistics row exists.
Per collection: the done bitmap chunks read (a damaged one is listed per shard), and, given the manifests, the ids
equal theirs. Shards are opened directly (``shard_index.py``), not through the serving reader, so a local folder and
an ``s3://`` store are checked the same way. The structural check (``deep=False``: index and statistics, no chunk
read) is what every ``precompute`` rerun runs on the shards it would skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.errors import CorruptFeatureError, DataError
from shared.features import chunk_crc, decode_chunk
from shared.manifest import read_manifest
from teacher_server.shard_index import open_shard
from teacher_server.storage import Blob
from teacher_server.store import Collection, FeatureStore

__all__ = ["Damage", "shard_damage", "verify_store"]


@dataclass(frozen=True)
class Damage:
    """One finding: a frame (``frame_id``), a whole shard's metadata (``frame_id`` None) or a collection's
    (``shard`` None)."""

    collection: str
    shard: int | None
    frame_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunk_damage(store: FeatureStore, col: Collection, blob: Blob, entry: tuple[int, int] | None) -> str | None:
    if entry is None:
        return "the shard index has no valid entry for it"
    data = blob.read(*entry)
    if len(data) != entry[1]:
        return f"truncated ({len(data)} of {entry[1]} bytes)"
    try:
        if store.encoding.crc32c:
            chunk_crc(data)
        else:
            decode_chunk(data, col.shape, store.encoding)
    except DataError as e:
        return str(e)
    return None


def shard_damage(store: FeatureStore, col: Collection, shard: int, deep: bool = True) -> list[Damage]:
    """What is wrong with a shard marked done: its object, index, statistics and (``deep``) every chunk.

    Returns an empty list for a sound shard; a shard that cannot be opened lists each of its frames.
    """
    rows = col.shard_rows(shard)
    found = []
    if col.stats_row(shard) is None:
        found.append(Damage(col.name, shard, None, "its statistics row is missing or damaged"))
    try:
        opened = open_shard(store.objects, col.shard_key(shard), col.entries_per_shard)
    except (FileNotFoundError, CorruptFeatureError) as e:
        reason = str(e) if isinstance(e, CorruptFeatureError) else "the shard is marked done but missing"
        return found + [Damage(col.name, shard, col.ids[r], reason) for r in rows]
    n_views = len(col.views)
    try:
        for j, r in enumerate(rows):
            for v, view in enumerate(col.views):
                entry = opened.entry(j * n_views + v)
                reason = _chunk_damage(store, col, opened.blob, entry) if deep or entry is None else None
                if reason is not None:
                    found.append(Damage(col.name, shard, col.ids[r], reason if n_views == 1 else
                                        f"view {view}: {reason}"))
    except OSError as e:  # a shard that became unreadable between the index and a chunk
        found += [Damage(col.name, shard, col.ids[r], f"cannot be read ({e})") for r in rows]
    finally:
        opened.blob.close()
    return found


def _ids_damage(store: FeatureStore, manifests: Sequence[Path], splits: Sequence[str] | None) -> list[Damage]:
    """Collections whose ids differ from the frames the manifests list (in the splits precompute was given)."""
    wanted: dict[str, list[str]] = {}
    for path in manifests:
        m = read_manifest(path)
        wanted.setdefault(m.header.dataset, []).extend(f.id for f in m if splits is None or f.split in splits)
    found = []
    for name, ids in wanted.items():
        col = store.collections.get(name)
        if col is None:
            found.append(Damage(name, None, None, f"the manifests list {len(ids)} frames of dataset {name!r}, the "
                                                  "store has no such collection"))
        elif col.ids != ids:
            first = next((i for i, (a, b) in enumerate(zip(col.ids, ids, strict=False)) if a != b),
                         min(len(ids), col.n_frames))
            got = col.ids[first] if first < col.n_frames else None
            want = ids[first] if first < len(ids) else None
            found.append(Damage(name, None, got, f"ids differ from the manifests' ({col.n_frames} vs {len(ids)} "
                                                 f"frames; first difference at row {first}: {got!r} vs {want!r})"))
    return found


def verify_store(store: FeatureStore, manifests: Sequence[Path] = (), splits: Sequence[str] | None = None
                 ) -> list[Damage]:
    """Every finding over the whole store (reads every chunk of every done shard)."""
    found = _ids_damage(store, manifests, splits) if manifests else []
    for col in store.collections.values():
        state = col.done_state()
        for k in range(col.n_shards):
            rows = col.shard_rows(k)
            if k in state.unreadable:
                found.append(Damage(col.name, k, None, "its done-bitmap chunk is unreadable (fails its checksum)"))
            elif state.done[rows.start : rows.stop].all():
                found += shard_damage(store, col, k)
    return found
