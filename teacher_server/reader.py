"""The serving hot path: stored chunk bytes by frame id with one ranged read per frame.

Going through zarr's decode costs milliseconds per frame; reading the bytes at the offset given by the
shard's index costs microseconds locally (``os.pread``) and one ranged GET on S3. Shard indexes are fetched,
checked and cached once per shard (``shard_index.py``), with what identifies the shard's version (inode and size
locally, the ETag on S3, where every ranged GET is conditional on it), so a shard rewritten by
``precompute --repair`` is picked up. Every chunk of a version-2 store is checked against its CRC32C before it
is sent (one hardware CRC over the chunk, no decode), so a damaged byte answers ``corrupt_feature`` for that frame
only. Byte access lives in ``storage.py``. The reader never writes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import google_crc32c
import numpy as np

from shared.errors import (
    CorruptFeatureError,
    DataError,
    FrameIdError,
    FrameNotFoundError,
    NotYetComputedError,
    ViewNotStoredError,
)
from shared.features import chunk_crc
from shared.ids import validate_frame_id
from teacher_server.shard_index import Shard, open_shard
from teacher_server.storage import StaleBlobError
from teacher_server.store import Collection, FeatureStore

__all__ = ["FRAME_ERRORS", "ChunkReader", "FrameChunk", "FrameError"]

FrameError = FrameIdError | FrameNotFoundError | ViewNotStoredError | NotYetComputedError | CorruptFeatureError
FRAME_ERRORS = (FrameIdError, FrameNotFoundError, ViewNotStoredError, NotYetComputedError, CorruptFeatureError)


@dataclass(frozen=True)
class FrameChunk:
    """Stored bytes of one view of one frame plus what a client needs to decode them."""

    frame_id: str
    data: bytes
    shape: tuple[int, int, int]
    etag: str
    view: str = "identity"


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
        self._shards: OrderedDict[tuple[int, int], Shard] = OrderedDict()
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
        """Done bit, re-reading the shard's bitmap chunk when the cached bit is still 0.

        Raises:
            CorruptFeatureError: the shard's bitmap chunk cannot be read (fails its CRC32C).
        """
        done = self._done[id(col)]
        if not done[row]:
            shard = row // col.shard_frames
            rows = col.shard_rows(shard)
            try:
                done[rows.start : rows.stop] = np.asarray(col.done_array[rows.start : rows.stop], dtype=bool)
            except (ValueError, RuntimeError, OSError) as e:
                raise CorruptFeatureError(f"frame {col.ids[row]!r}: the done bitmap of shard {shard} of "
                                          f"{col.where} is damaged ({e}); run `teacher-server precompute "
                                          "--repair`") from None
        return bool(done[row])

    @property
    def local(self) -> bool:
        """True when every store's backend reads locally (a few microseconds of ``pread``), cheap enough for the
        server's event loop; reads from object storage are network calls and belong in a worker thread."""
        return all(store.objects.reads_are_local for store in self.stores)

    def read(self, frame_id: str, view: str = "identity") -> FrameChunk:
        """The stored (compressed) chunk bytes of one view of a frame.

        Raises:
            FrameIdError: malformed id.  FrameNotFoundError: unknown id.  ViewNotStoredError: a view the frame's
            collection does not store.  NotYetComputedError: known but its shard is not done.
            CorruptFeatureError: damaged bytes.
        """
        return self._read(frame_id, view, {})

    def read_many(self, frame_ids: Sequence[str], views: Sequence[str] | None = None) -> list[FrameChunk | FrameError]:
        """Chunks of many frames in order (``views[k]`` of frame k; default identity), each failure in its frame's
        place (the exception :meth:`read` would raise). A shard is checked for replacement once per call, not once
        per frame."""
        seen: dict[tuple[int, int], Shard] = {}
        out: list[FrameChunk | FrameError] = []
        for k, fid in enumerate(frame_ids):
            try:
                out.append(self._read(fid, views[k] if views is not None else "identity", seen))
            except FRAME_ERRORS as e:
                out.append(e)
        return out

    def _read(self, frame_id: str, view: str, seen: dict[tuple[int, int], Shard]) -> FrameChunk:
        store, col, row = self.locate(frame_id)
        try:
            v = col.view_index(view)
        except KeyError as e:
            raise ViewNotStoredError(f"frame {frame_id!r}: {e.args[0]}") from None
        if not self.is_done(col, row):
            raise NotYetComputedError(f"frame {frame_id!r} is known but not computed yet (precompute is running?)")
        shard_no, j = divmod(row, col.shard_frames)
        data = self._read_row(store, col, shard_no, j * len(col.views) + v, frame_id, seen)
        if store.encoding.crc32c:
            try:
                crc = chunk_crc(data)
            except DataError:
                raise CorruptFeatureError(f"frame {frame_id!r}: its chunk in shard {self._name(store, col, shard_no)} "
                                          "fails its CRC32C (damaged bytes)") from None
        else:  # version-1 store: no stored CRC, damage shows only when a client decodes
            crc = google_crc32c.value(data)
        tag = "" if view == "identity" else f"{view}-"
        return FrameChunk(frame_id, data, col.shape, f'"{store.teacher.weights_digest[:16]}-{tag}{crc:08x}"', view)

    def _read_row(self, store: FeatureStore, col: Collection, shard_no: int, j: int, frame_id: str,
                  seen: dict[tuple[int, int], Shard]) -> bytes:
        """Index entry ``j`` of a shard: one ranged read; again with a fresh index if the shard was just replaced."""
        key = (id(col), shard_no)
        for _ in range(2):
            shard = seen.get(key) or self._shard(store, col, shard_no)
            seen[key] = shard
            entry = shard.entry(j)
            if entry is None:
                raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} has no "
                                          f"valid entry {j}")
            offset, nbytes = entry
            try:
                data = shard.blob.read(offset, nbytes)
            except StaleBlobError:
                self._forget(key, shard)
                del seen[key]
                continue
            except FileNotFoundError:
                raise CorruptFeatureError(f"shard {self._name(store, col, shard_no)} is marked done but missing") \
                    from None
            except OSError as e:
                raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} cannot be "
                                          f"read ({type(e).__name__}: {e.strerror or e})") from None
            if len(data) != nbytes:
                raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} is "
                                          f"truncated ({len(data)} of {nbytes} bytes)")
            return data
        raise CorruptFeatureError(f"frame {frame_id!r}: shard {self._name(store, col, shard_no)} was replaced twice "
                                  "while being read")

    @staticmethod
    def _name(store: FeatureStore, col: Collection, shard_no: int) -> str:
        return store.objects.describe(col.shard_key(shard_no))

    def _shard(self, store: FeatureStore, col: Collection, shard_no: int) -> Shard:
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
            shard = open_shard(objects, col.shard_key(shard_no), col.entries_per_shard)
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

    def _forget(self, key: tuple[int, int], shard: Shard) -> None:
        with self._lock:
            if self._shards.get(key) is shard:
                del self._shards[key]

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.blob.close()
            self._shards.clear()
