"""A features shard's index (Zarr v3 sharding spec): where each frame's chunk lies in the shard object.

The index is the shard's last ``16 * entries`` bytes (per chunk, in C order over the shard's frames and views:
uint64 LE offset, uint64 LE size; both ``2**64 - 1`` for a chunk never written) followed by their CRC32C. One
read fetches and checks it. Both the serving reader and verification open shards through :func:`open_shard`;
neither decodes through zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

import google_crc32c
import numpy as np

from shared.errors import CorruptFeatureError
from teacher_server.storage import Blob, StoreObjects

__all__ = ["EMPTY", "Shard", "open_shard"]

EMPTY = 2**64 - 1  # offset and size of a row never written


@dataclass
class Shard:
    """An opened shard: its blob (ranged reads of the version opened) and per index entry ``[offset, nbytes]``
    (Python ints: cheaper per lookup than a numpy array)."""

    blob: Blob
    rows: list[list[int]]

    def entry(self, j: int) -> tuple[int, int] | None:
        """``(offset, nbytes)`` of entry ``j``'s chunk, or None when the index has no valid entry for it."""
        offset, nbytes = self.rows[j]
        if offset == EMPTY or offset + nbytes > self.blob.size:
            return None
        return offset, nbytes


def open_shard(objects: StoreObjects, key: str, entries: int) -> Shard:
    """Open a shard and check its index of ``entries`` chunks (one read of its last ``16 * entries + 4`` bytes).

    Raises:
        FileNotFoundError: no object at ``key``.
        CorruptFeatureError: unreadable (a folder, no permission), truncated, or an index failing its CRC32C.
    """
    index_bytes = 16 * entries
    describe = objects.describe
    try:
        blob, tail = objects.open_tail(key, index_bytes + 4)
    except FileNotFoundError:
        raise
    except OSError as e:  # IsADirectoryError, PermissionError, an I/O error of the disk
        raise CorruptFeatureError(f"shard {describe(key)} cannot be read ({type(e).__name__}: {e.strerror or e})") \
            from None
    if len(tail) < index_bytes + 4:
        blob.close()
        raise CorruptFeatureError(f"shard {describe(key)} is truncated ({blob.size} bytes, its index alone needs "
                                  f"{index_bytes + 4})")
    if google_crc32c.value(tail[:-4]).to_bytes(4, "little") != tail[-4:]:
        blob.close()
        raise CorruptFeatureError(f"shard {describe(key)}: index checksum mismatch (truncated or overwritten file)")
    return Shard(blob=blob, rows=np.frombuffer(tail[:-4], dtype="<u8").reshape(entries, 2).tolist())
