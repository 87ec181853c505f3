"""The serving hot path: stored chunk bytes by frame id with one ``os.pread`` per frame.

Going through zarr's decode costs milliseconds per frame; reading the bytes at the offset given by the
shard's index costs microseconds. Shard indexes (``16 * shard_frames`` bytes + a CRC32C, at the end of
each shard file, per the Zarr v3 sharding spec) are parsed and checked once and cached with the file's
inode, so a shard rewritten by ``precompute --repair`` is picked up. The reader never writes.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from shared.errors import FrameNotFoundError
from shared.ids import validate_frame_id
from teacher_server.errors import CorruptFeatureError, NotYetComputedError
from teacher_server.store import Collection, FeatureStore

__all__ = ["ChunkReader", "FrameChunk"]

_EMPTY = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class FrameChunk:
    """Stored bytes of one frame plus what a client needs to decode them."""

    frame_id: str
    data: bytes
    shape: tuple[int, int, int]
    etag: str


@dataclass
class _Shard:
    fd: int
    ino: int
    size: int
    index: np.ndarray  # (shard_frames, 2) uint64: offset, nbytes


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

    def read(self, frame_id: str) -> FrameChunk:
        """The frame's stored (compressed) chunk bytes.

        Raises:
            FrameIdError: malformed id.  FrameNotFoundError: unknown id.
            NotYetComputedError: known but its shard is not done.  CorruptFeatureError: damaged bytes.
        """
        store, col, row = self.locate(frame_id)
        if not self.is_done(col, row):
            raise NotYetComputedError(f"frame {frame_id!r} is known but not computed yet (precompute is running?)")
        shard_no, j = divmod(row, col.shard_frames)
        path = store.root / col.shard_key(shard_no)
        shard = self._shard(col, shard_no, path)
        offset, nbytes = (int(v) for v in shard.index[j])
        if shard.index[j, 0] == _EMPTY or offset + nbytes > shard.size:
            raise CorruptFeatureError(f"frame {frame_id!r}: shard {path} has no valid entry for row {row}")
        data = os.pread(shard.fd, nbytes, offset)
        if len(data) != nbytes:
            raise CorruptFeatureError(f"frame {frame_id!r}: shard {path} is truncated ({len(data)} of {nbytes} bytes)")
        etag = f'"{store.teacher.weights_digest[:16]}-{google_crc32c.value(data):08x}"'
        return FrameChunk(frame_id, data, col.shape, etag)

    def _shard(self, col: Collection, shard_no: int, path: Path) -> _Shard:
        key = (id(col), shard_no)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CorruptFeatureError(f"shard {path} is marked done but missing") from None
        with self._lock:
            cached = self._shards.get(key)
            if cached is not None and cached.ino == st.st_ino and cached.size == st.st_size:
                self._shards.move_to_end(key)
                return cached
            if cached is not None:
                os.close(cached.fd)
            shard = _open_shard(path, col.shard_frames, st)
            self._shards[key] = shard
            while len(self._shards) > self._max_open:
                _, old = self._shards.popitem(last=False)
                os.close(old.fd)
            return shard

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                os.close(shard.fd)
            self._shards.clear()


def _open_shard(path: Path, shard_frames: int, st: os.stat_result) -> _Shard:
    index_bytes = 16 * shard_frames
    if st.st_size < index_bytes + 4:
        need = index_bytes + 4
        raise CorruptFeatureError(f"shard {path} is truncated ({st.st_size} bytes, its index alone needs {need})")
    fd = os.open(path, os.O_RDONLY)
    tail = os.pread(fd, index_bytes + 4, st.st_size - index_bytes - 4)
    if google_crc32c.value(tail[:-4]).to_bytes(4, "little") != tail[-4:]:
        os.close(fd)
        raise CorruptFeatureError(f"shard {path}: index checksum mismatch (truncated or overwritten file)")
    index = np.frombuffer(tail[:-4], dtype="<u8").reshape(shard_frames, 2)
    return _Shard(fd=fd, ino=st.st_ino, size=st.st_size, index=index)
