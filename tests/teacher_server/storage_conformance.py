"""The contract every storage backend keeps (zarr-python's ``testing/store.py`` pattern): subclass and run.

:class:`StorageConformance` tests a backend's :class:`StoreObjects` and :class:`Blob` (tails, ranged reads, size,
existence, removal, durability, partial-write clean-up, the writers' lock, stale and deleted objects, names in
messages) and, through them, the feature store on top (create, write shards, read through the serving reader,
verify, rewrite a shard under a reader that cached it). A backend's test module subclasses it and provides a fresh
empty ``location`` per test plus raw access that bypasses the backend (``put``, ``stored``, ``read_named``,
``is_empty``, ``leave_partial``), so the backend is checked against the medium itself rather than against itself.
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod

import numpy as np
import pytest

from shared.features import decode_chunk, encoding
from shared.identity import TeacherIdentity
from teacher_server.reader import ChunkReader
from teacher_server.storage import Blob, StaleBlobError, StoreLocation, StoreObjects, backend_for, open_objects
from teacher_server.store import CollectionSpec, FeatureStore, shard_statistics
from teacher_server.verify import verify_store

__all__ = ["StorageConformance"]

KEY, SIBLING = "col/features/c/0/0", "col/features/c/0/1"  # one folder, as a collection's done chunks
DATA = bytes(range(256)) * 3 + b"tail-bytes"  # 778 bytes, every offset distinguishable
TEACHER = TeacherIdentity(arch="alexnet", weights="conformance", weights_digest="c0" * 32,
                          mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), out_channels=4)
VIEWS = ("identity", "mirror")


def _noticed_change(blob: Blob) -> bool:
    """True when the blob reports that its object was replaced or deleted: ``is_current()`` False or raising
    FileNotFoundError, or a read raising StaleBlobError / FileNotFoundError (what the reader reopens on)."""
    try:
        if not blob.is_current():
            return True
        blob.read(0, 1)
    except (StaleBlobError, FileNotFoundError):
        return True
    return False


class StorageConformance(ABC):
    """Tests every backend passes. Subclasses set ``reads_are_local`` and implement the fixture and raw hooks."""

    reads_are_local: bool

    @abstractmethod
    @pytest.fixture
    def location(self) -> StoreLocation:
        """A fresh location holding nothing yet."""

    @abstractmethod
    def put(self, location: StoreLocation, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` without the backend, replacing an object as the backend's writer does."""

    @abstractmethod
    def stored(self, location: StoreLocation, key: str) -> bytes | None:
        """The bytes at ``key`` read without the backend; None when nothing is there."""

    @abstractmethod
    def read_named(self, name: str) -> bytes:
        """The bytes of the object that ``describe`` named ``name`` (a path, a URL), read without the backend."""

    @abstractmethod
    def is_empty(self, location: StoreLocation) -> bool:
        """True when nothing at all exists at the location (locally: not even its folder)."""

    @abstractmethod
    def leave_partial(self, location: StoreLocation, key: str) -> str | None:
        """Leave what a write of ``key`` killed midway leaves behind; its raw key, or None when nothing can be."""

    @pytest.fixture
    def objects(self, location: StoreLocation) -> StoreObjects:
        return open_objects(location, read_only=False)[1]

    # --- locations and capabilities

    def test_location_round_trips_and_names_its_backend(self, location, objects):
        assert StoreLocation.parse(location.url) == location
        assert str(location) == location.url
        assert type(objects) is backend_for(location.scheme)
        assert objects.reads_are_local is self.reads_are_local
        assert objects.location == location

    # --- reads

    def test_open_tail_of_the_whole_object(self, location, objects):
        self.put(location, KEY, DATA)
        for nbytes in (len(DATA), len(DATA) + 1000):
            blob, tail = objects.open_tail(KEY, nbytes)
            assert tail == DATA and blob.size == len(DATA)
            blob.close()

    def test_open_tail_of_a_partial_tail(self, location, objects):
        self.put(location, KEY, DATA)
        blob, tail = objects.open_tail(KEY, 10)
        assert tail == b"tail-bytes" and blob.size == len(DATA)
        blob.close()

    def test_ranged_reads_return_exactly_the_range(self, location, objects):
        self.put(location, KEY, DATA)
        blob, _ = objects.open_tail(KEY, 4)
        for offset, nbytes in [(0, 1), (0, 256), (255, 2), (300, 200), (len(DATA) - 10, 10), (0, len(DATA))]:
            assert blob.read(offset, nbytes) == DATA[offset : offset + nbytes], (offset, nbytes)
        assert blob.is_current()
        blob.close()

    def test_size_and_exists(self, location, objects):
        self.put(location, KEY, DATA)
        self.put(location, SIBLING, b"x")
        assert objects.size(KEY) == len(DATA) and objects.size(SIBLING) == 1
        assert objects.exists(KEY) and objects.exists(SIBLING)
        assert not objects.exists("col/features/c/2/0")
        assert not objects.exists("col")  # a key prefix is not an object

    def test_missing_keys_raise_file_not_found(self, location, objects):
        self.put(location, SIBLING, b"x")
        with pytest.raises(FileNotFoundError):
            objects.open_tail(KEY, 10)
        with pytest.raises(FileNotFoundError):
            objects.size(KEY)
        assert not objects.exists(KEY)

    # --- writes

    def test_remove_present_and_absent_keys(self, location, objects):
        self.put(location, KEY, DATA)
        self.put(location, SIBLING, b"x")
        objects.remove(KEY)
        assert self.stored(location, KEY) is None and not objects.exists(KEY)
        with pytest.raises(FileNotFoundError):
            objects.open_tail(KEY, 10)
        objects.remove(KEY)  # already gone: no error
        objects.remove("never/written")
        assert self.stored(location, SIBLING) == b"x"

    def test_make_durable_keeps_the_object(self, location, objects):
        self.put(location, KEY, DATA)
        objects.make_durable(KEY)
        assert self.stored(location, KEY) == DATA and objects.size(KEY) == len(DATA)

    def test_discard_partials_removes_only_the_keys_leftovers(self, location, objects):
        self.put(location, KEY, DATA)
        self.put(location, SIBLING, b"x")
        mine, theirs = self.leave_partial(location, KEY), self.leave_partial(location, SIBLING)
        objects.discard_partials(KEY)
        assert self.stored(location, KEY) == DATA and self.stored(location, SIBLING) == b"x"
        if mine is not None:
            assert self.stored(location, mine) is None
        if theirs is not None:
            assert self.stored(location, theirs) is not None  # another shard's write in progress is left alone
        objects.discard_partials("never/written")

    def test_writer_lock_is_a_reusable_context_manager(self, location, objects):
        for _ in range(2):
            lock = objects.writer_lock()
            assert isinstance(lock, contextlib.AbstractContextManager)
            with lock as held:
                assert held is None

    # --- replaced and deleted objects

    @pytest.mark.parametrize("new", [DATA[::-1], DATA + b"longer"], ids=["same-size", "other-size"])
    def test_a_replaced_object_makes_an_opened_blob_stale(self, location, objects, new):
        self.put(location, KEY, DATA)
        blob, _ = objects.open_tail(KEY, 10)
        assert not _noticed_change(blob)
        self.put(location, KEY, new)
        assert _noticed_change(blob)
        fresh, tail = objects.open_tail(KEY, 10)
        assert tail == new[-10:] and fresh.size == len(new) and fresh.read(0, 5) == new[:5]
        assert not _noticed_change(fresh)
        blob.close()
        fresh.close()

    def test_a_deleted_object_is_noticed_by_an_opened_blob(self, location, objects):
        self.put(location, KEY, DATA)
        blob, _ = objects.open_tail(KEY, 10)
        objects.remove(KEY)
        assert _noticed_change(blob)
        blob.close()

    # --- names

    def test_describe_names_the_object(self, location, objects):
        self.put(location, KEY, DATA)
        name = objects.describe(KEY)
        assert name.startswith(location.url) and name.endswith(KEY)
        assert self.read_named(name) == DATA

    # --- the feature store on this backend

    def test_opening_a_missing_store_is_file_not_found_and_creates_nothing(self, location):
        for mode in ("r", "r+"):
            with pytest.raises(FileNotFoundError, match=f"no feature store at {re.escape(location.url)} "):
                FeatureStore.open(location.url, mode=mode)
        assert self.is_empty(location)

    def test_feature_store_round_trip_through_reader_and_verify(self, location):
        maps = np.random.default_rng(0).standard_normal((5, len(VIEWS), 4, 3, 5)).astype(np.float32)
        col = _write_store(location, maps)
        store = FeatureStore.open(location.url)
        assert store.collections["conf"].done().all() and store.collections["conf"].summary()["frames_done"] == 5
        reader = ChunkReader([store])
        try:
            assert reader.local is self.reads_are_local
            for i, fid in enumerate(col.ids):
                for v, view in enumerate(VIEWS):
                    chunk = reader.read(fid, view)
                    np.testing.assert_array_equal(decode_chunk(chunk.data, chunk.shape, store.encoding), maps[i, v])
            assert verify_store(store) == []
            # a shard rewritten (as by precompute --repair) while the reader holds its index: the new bytes served
            maps[:2] += 1
            col.write_shard(0, maps[:2], shard_statistics(maps[:2, 0], maps[:2, 0]))
            for i in range(2):
                chunk = reader.read(col.ids[i])
                np.testing.assert_array_equal(decode_chunk(chunk.data, chunk.shape, store.encoding), maps[i, 0])
        finally:
            reader.close()
        assert verify_store(FeatureStore.open(location.url)) == []


def _write_store(location: StoreLocation, maps: np.ndarray):
    """A store of one collection (frames ``conf.0000``..., two views, shards of 2 frames) holding ``maps``."""
    spec = CollectionSpec("conf", tuple(f"conf.{i:04d}" for i in range(len(maps))), maps.shape[2:], (24, 40), VIEWS)
    store = FeatureStore.create_or_open(location.url, TEACHER, encoding("f32-zstd1"), [spec], shard_frames=2)
    col = store.collections["conf"]
    for k in range(col.n_shards):
        rows = col.shard_rows(k)
        part = maps[rows.start : rows.stop]
        col.write_shard(k, part, shard_statistics(part[:, 0], part[:, 0]))
    col.record_summary()
    return col
