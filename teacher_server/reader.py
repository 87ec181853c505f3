"""The serving hot path: stored chunk bytes by frame id with one ranged read per frame.

Going through zarr's decode costs milliseconds per frame; reading the bytes at the offset given by the
shard's index costs microseconds locally (``os.pread``) and one ranged GET on S3. Shard indexes
(``16 * shard_frames`` bytes + a CRC32C, at the end of each shard object, per the Zarr v3 sharding spec) are
fetched, checked and cached once per shard, with what identifies the shard's version (inode and size locally,
the ETag on S3, where every ranged GET is conditional on it), so a shard rewritten by ``precompute --repair``
is picked up. Byte access lives in ``storage.py``; this module knows the index format. The reader never writes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import google_crc32c
import numpy as np

from shared.errors import FrameIdError, FrameNotFoundError
from shared.ids import validate_frame_id
from teacher_server.errors import CorruptFeatureError, NotYetComputedError
from teacher_server.storage import Blob, StaleBlobError, StoreObjects
from teacher_server.store import Collection, FeatureStore

__all__ = ["FRAME_ERRORS", "ChunkReader", "FrameChunk", "FrameError"]

_EMPTY = 2**64 - 1  # offset and size of a row never written

FrameError = FrameIdError | FrameNotFoundError | NotYetComputedError | CorruptFeatureError
FRAME_ERRORS = (FrameIdError, FrameNotFoundError, NotYetComputedError, CorruptFeatureError)


@dataclass(frozen=True)
class FrameChunk:
    """Stored bytes of one frame plus what a client needs to decode them."""

    frame_id: str
    data: bytes
    shape: tuple[int, int, int]
    etag: str


@dataclass
class _Shard:
    blob: Blob
    rows: list[list[int]]  # per row [offset, nbytes]: Python ints, cheaper per lookup than a numpy array


class ChunkReader:
    """Frame id -> stored chunk bytes, across every collection of one or more stores."""

    def __init__(self, stores: list[FeatureStore], max_open_shards: int = 256) -> None:
        self.stores = stores
        self._where: dict[str, tuple[FeatureStore, Collection, int]] = {}
        self._done: dict[int, np.ndarray] = {}
        for store in stores:
            for col in store.collections.values():
                self._done[id(col)] = col.done()
                for row, fid in enumerate(col.ids):
                    if fid in self._where:
                        raise ValueError(f"frame id {fid!r} is in two collections; ids must be unique per server")
                    self._where[fid] = (store, col, row)
        self._shards: OrderedDict[tuple[int, int], _Shard] = OrderedDict()
        self._max_open = max_open_shards
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, frame_id: str) -> bool:
        return frame_id in self._where

    def locate(self, frame_id: str) -> tuple[FeatureStore, Collection, int]:
        """Store, collection and row of a frame. Raises FrameIdError / FrameNotFoundError."""
        try:
            return self._where[frame_id]
        except KeyError:
            validate_frame_id(frame_id)
            raise FrameNotFoundError(f"frame {frame_id!r} is not in any served store") from None

    def is_done(self, col: Collection, row: int) -> bool:
        """Done bit, re-reading the shard's bitmap chunk when the cached bit is still 0."""
        done = self._done[id(col)]
        if not done[row]:
            rows = col.shard_rows(row // col.shard_frames)
            done[rows.start : rows.stop] = np.asarray(col.done_array[rows.start : rows.stop], dtype=bool)
        return bool(done[row])

    def done_count(self) -> int:
        """Frames done across all collections (re-read from the stores)."""
        total = 0
        for store in self.stores:
            for col in store.collections.values():
                self._done[id(col)] = col.done()
                total += int(self._done[id(col)].sum())
        return total

    @property
    def local(self) -> bool:
        """True when every store is a local folder: a read is a few microseconds of ``pread``, cheap enough for the
        server's event loop; reads from object storage are network calls and belong in a worker thread."""
        return all(store.location.path is not None for store in self.stores)

    def read(self, frame_id: str) -> FrameChunk:
        """The frame's stored (compressed) chunk bytes.

        Raises:
            FrameIdError: malformed id.  FrameNotFoundError: unknown id.
            NotYetComputedError: known but its shard is not done.  CorruptFeatureError: damaged bytes.
        """
        return self._read(frame_id, {})

    def read_many(self, frame_ids: Sequence[str]) -> list[FrameChunk | FrameError]:
        """Chunks of many frames in order, each failure in its frame's place (the exception :meth:`read` would
        raise). A shard is checked for replacement once per call, not once per frame."""
        seen: dict[tuple[int, int], _Shard] = {}
        out: list[FrameChunk | FrameError] = []
        for fid in frame_ids:
            try:
                out.append(self._read(fid, seen))
            except FRAME_ERRORS as e:
                out.append(e)
        return out

    def _read(self, frame_id: str, seen: dict[tuple[int, int], _Shard]) -> FrameChunk:
        store, col, row = self.locate(frame_id)
        if not self.is_done(col, row):
            raise NotYetComputedError(f"frame {frame_id!r} is known but not computed yet (precompute is running?)")
        shard_no, j = divmod(row, col.shard_frames)
        data = self._read_row(store, col, shard_no, j, frame_id, seen)
        etag = f'"{store.teacher.weights_digest[:16]}-{google_crc32c.value(data):08x}"'
        return FrameChunk(frame_id, data, col.shape, etag)

    def _read_row(self, store: FeatureStore, col: Collection, shard_no: int, j: int, frame_id: str,
                  seen: dict[tuple[int, int], _Shard]) -> bytes:
        """Row ``j`` of a shard: one ranged read; again with a fresh index if the shard was just replaced."""
        key = (id(col), shard_no)
        for _ in range(2):
            shard = seen.get(key) or self._shard(store, col, shard_no)
            seen[key] = shard
            offset, nbytes = shard.rows[j]
            if offset == _EMPTY or offset + nbytes > shard.blob.size:
                raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} has no "
                                          f"valid entry for row {j}")
            try:
                data = shard.blob.read(offset, nbytes)
            except StaleBlobError:
                self._forget(key, shard)
                del seen[key]
                continue
            except FileNotFoundError:
                raise CorruptFeatureError(f"shard {self._name(store, col, shard_no)} is marked done but missing") \
                    from None
            if len(data) != nbytes:
                raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} is "
                                          f"truncated ({len(data)} of {nbytes} bytes)")
            return data
        raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} was replaced twice "
                                  "while being read")

    @staticmethod
    def _name(store: FeatureStore, col: Collection, shard_no: int) -> str:
        return store.objects.describe(col.shard_key(shard_no))

    def _shard(self, store: FeatureStore, col: Collection, shard_no: int) -> _Shard:
        """The cached shard (index checked once), reopened when its version changed."""
        key = (id(col), shard_no)
        objects = store.objects
        with self._lock:
            cached = self._shards.get(key)
        try:
            if cached is not None and cached.blob.is_current():
                with self._lock:
                    if self._shards.get(key) is cached:  # another thread may have evicted it meanwhile
                        self._shards.move_to_end(key)
                return cached
            shard = _open_shard(objects, col.shard_key(shard_no), col.shard_frames)
        except FileNotFoundError:
            raise CorruptFeatureError(f"shard {objects.describe(col.shard_key(shard_no))} is marked done but "
                                      "missing") from None
        # Replaced or evicted shards are only dropped, never closed here: another thread may be reading one; its
        # file closes when the last reference goes.
        with self._lock:
            self._shards.pop(key, None)
            self._shards[key] = shard
            while len(self._shards) > self._max_open:
                self._shards.popitem(last=False)
        return shard

    def _forget(self, key: tuple[int, int], shard: _Shard) -> None:
        with self._lock:
            if self._shards.get(key) is shard:
                del self._shards[key]

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.blob.close()
            self._shards.clear()


def _open_shard(objects: StoreObjects, key: str, shard_frames: int) -> _Shard:
    """Fetch a shard's index (its last ``16 * shard_frames + 4`` bytes: one read) and check its CRC32C."""
    index_bytes = 16 * shard_frames
    describe = objects.describe
    blob, tail = objects.open_tail(key, index_bytes + 4)
    if len(tail) < index_bytes + 4:
        blob.close()
        raise CorruptFeatureError(f"shard {describe(key)} is truncated ({blob.size} bytes, its index alone needs "
                                  f"{index_bytes + 4})")
    if google_crc32c.value(tail[:-4]).to_bytes(4, "little") != tail[-4:]:
        blob.close()
        raise CorruptFeatureError(f"shard {describe(key)}: index checksum mismatch (truncated or overwritten file)")
    return _Shard(blob=blob, rows=np.frombuffer(tail[:-4], dtype="<u8").reshape(shard_frames, 2).tolist())
