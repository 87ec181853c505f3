"""Copy a version-1 feature store (no chunk checksums) into a new version-2 store.

Each done shard is read through zarr (decoded to its stored dtype, so the values are bit-identical) and written
with the version-2 codecs, its statistics row copied; the copy is resumable like ``precompute`` (done shards of the
new store are skipped). A version-1 shard that no longer decodes is not copied: it is reported, and ``precompute``
on the new store (same manifests and teacher) computes it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from shared.errors import XModalError
from teacher_server.store import Collection, CollectionSpec, FeatureStore, shard_statistics

__all__ = ["migrate_store"]

log = logging.getLogger(__name__)


def _copy_shard(old: Collection, new: Collection, shard: int) -> bool:
    rows = old.shard_rows(shard)
    try:
        stored = np.asarray(old.features[rows.start : rows.stop])
    except (ValueError, RuntimeError, OSError) as e:
        log.warning("shard %d of %r is damaged in the old store and not copied (%s); run precompute on the new "
                    "store to compute it", shard, old.name, e)
        return False
    row = old.stats_row(shard)
    if row is None:  # lossless statistics from the stored values; the float32 error of a lossy store is unknown
        log.warning("shard %d of %r had no statistics row; recomputed from its stored values", shard, old.name)
        row = shard_statistics(stored.astype(np.float32), stored.astype(np.float32))
    new.write_shard(shard, stored[:, None], row)  # format 1 stored one view: identity
    return True


def migrate_store(src: str | os.PathLike[str], dst: str | os.PathLike[str], progress: bool = True) -> tuple[int, int]:
    """Copy every done shard of the version-1 store ``src`` into the version-2 store ``dst``.

    Returns:
        (shards copied, shards already in ``dst``).
    Raises:
        XModalError: ``src`` is not a version-1 store.
    """
    old = FeatureStore.open(src)
    if old.version != 1:
        raise XModalError(f"{old.location} is already a version-{old.version} store: nothing to migrate")
    extra = {k: v for k, v in old.meta.items() if k not in ("format", "version", "teacher", "encoding",
                                                            "collections")}
    encoding = replace(old.encoding, crc32c=True)
    copied = skipped = 0
    for name, col in old.collections.items():
        spec = CollectionSpec(name, tuple(col.ids), col.shape, col.input_size)
        new = FeatureStore.create_or_open(dst, old.teacher, encoding, [spec], col.shard_frames, extra).collections[name]
        done_old, done_new = col.done_state(), new.done()
        shards = [k for k in range(col.n_shards) if k not in done_old.unreadable
                  and done_old.done[col.shard_rows(k).start : col.shard_rows(k).stop].all()]
        for k in tqdm(shards, desc=f"migrate {name}", unit="shard", disable=not progress):
            if done_new[col.shard_rows(k).start : col.shard_rows(k).stop].all():
                skipped += 1
            elif _copy_shard(col, new, k):
                copied += 1
        new.record_summary()
    return copied, skipped
