"""The Zarr v3 feature store: one group per teacher, one sub-group ("collection") per frame-shape group.

Layout (all Zarr v3)::

    <store>/zarr.json                      attributes["xmodal"]: format, version, teacher, encoding, collections, digest
    <store>/<collection>/zarr.json         attributes["xmodal"]: shape (C, H, W), views, input_size, shard_frames,
                                           frames, ids_digest, teacher_id, summary, digest
    <store>/<collection>/features          (N, V, C, H, W): chunk = one view of one frame, shard = ``shard_frames``
                                           frames with all their V views (version 1: (N, C, H, W), one view)
    <store>/<collection>/ids               (N,) UTF-8 frame ids (row i holds frame ids[i])
    <store>/<collection>/done              (N,) uint8 completion bitmap, chunked by shard
    <store>/<collection>/shard_stats       (n_shards, 8 + C) float64 per-shard statistics (see ShardStats)

Views (``shared.features.VIEWS``): ``identity`` is the teacher's map of the frame, ``mirror`` its map of the
mirrored frame (computed, so a student trained on mirrored inputs regresses the exact target).

Integrity (format version 2): every feature chunk ends with its CRC32C (zarr's ``crc32c`` codec after zstd), so a
damaged byte is found without decoding; the ``ids``, ``done`` and ``shard_stats`` chunks carry CRC32Cs too; the
``xmodal`` attributes carry a SHA-256 ``digest`` of themselves and the collection's a digest of its ids. Version-1
stores (no checksums) stay readable; ``teacher-server migrate`` copies one into a version-2 store.

Writers own whole shards: a shard's features are written in one ``set`` (zarr's LocalStore writes a
temp file and renames it), fsynced, then its statistics, and only then its ``done`` bits. A crash at
any point leaves at worst a shard that is rewritten on resume; a reader never sees a done frame whose
bytes are not on disk. Per-shard statistics live in their own rows so concurrent workers never write
the same object.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, NodeNotFoundError

from shared.errors import DataError, XModalError
from shared.features import VIEWS, FeatureEncoding
from shared.identity import TeacherIdentity
from shared.ids import validate_frame_id
from shared.zarr_codec import QuantizeCodec  # registers the quantised encodings' codec before any store opens
from teacher_server.shard_encode import write_full_shard
from teacher_server.storage import StoreLocation, StoreObjects, open_objects

__all__ = [
    "REPAIR_HINT",
    "STORE_FORMAT",
    "STORE_VERSION",
    "Collection",
    "CollectionSpec",
    "DoneState",
    "FeatureStore",
    "ShardStats",
    "StoreDamagedError",
    "StoreFullError",
    "StoreMismatchError",
    "ids_digest",
    "shard_statistics",
]

log = logging.getLogger(__name__)

STORE_FORMAT = "xmodal-features"
STORE_VERSION = 2
_READABLE_VERSIONS = (1, STORE_VERSION)
REPAIR_HINT = ("rerun `teacher-server precompute --repair` with the store's manifests and teacher to rebuild it "
               "(`teacher-server verify` lists what is damaged)")
_N_FIXED_STATS = 8
_Node = TypeVar("_Node")
# What zarr raises for a chunk or metadata document it cannot read: a CRC mismatch (ValueError), a corrupt zstd
# frame (RuntimeError), invalid JSON (ValueError), a directory or an unreadable file in its place (OSError).
_UNREADABLE = (ValueError, RuntimeError, OSError)


@dataclass(frozen=True)
class ShardStats:
    """Column indices of a ``shard_stats`` row (``8 + C`` float64 values).

    frames; sum of per-frame L2 norms; sum of squared norms; raw float32 bytes; stored (compressed shard file)
    bytes; max |x - stored|; max relative error (vs the frame's max |x|); sum over frames of the fraction of exact
    zeros; then ``channels`` = per-channel sums of spatial means (C columns).
    """

    frames: int = 0
    norm: int = 1
    norm_sq: int = 2
    raw_bytes: int = 3
    stored_bytes: int = 4
    max_err: int = 5
    max_rel_err: int = 6
    zeros: int = 7
    channels: int = _N_FIXED_STATS


COLUMNS = ShardStats()


class StoreMismatchError(XModalError, ValueError):
    """An existing store was made with a different teacher, encoding or frame list."""


class StoreFullError(XModalError, OSError):
    """The store's filesystem ran out of space (or quota); what was being written is not marked done."""


class StoreDamagedError(DataError):
    """Store metadata (a ``zarr.json``, the ids, the done bitmap) is missing, unreadable or fails its checksum."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _write_checked(root: StoreLocation, what: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT into a :class:`StoreFullError` that names the store and says how to resume, and any
    other OS error (a permission, a directory where a file belongs) into an XModalError naming what was written."""
    try:
        yield
    except OSError as e:
        if e.errno in _FULL_ERRNOS:
            raise StoreFullError(
                f"store {root}: no space left on device while writing {what} ({e}); it is not marked "
                "done: free some space and rerun the same command to resume"
            ) from e
        raise XModalError(f"store {root}: cannot write {what}: {type(e).__name__}: {e}") from e


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection will hold: its frame ids in row order, map shape, teacher input size and views."""

    name: str
    ids: tuple[str, ...]
    shape: tuple[int, int, int]
    input_size: tuple[int, int]
    views: tuple[str, ...] = ("identity",)


@dataclass(frozen=True)
class DoneState:
    """The completion bitmap as read: ``done`` (N,) bool, and the shards whose bitmap chunk could not be read
    (their rows read as not done)."""

    done: np.ndarray
    unreadable: frozenset[int]


def ids_digest(ids: Sequence[str]) -> str:
    """SHA-256 of the frame ids in row order (recorded at creation, so damaged or swapped ids are detected)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _digest(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sealed(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with a digest of itself, so a changed byte in a ``zarr.json`` is detected."""
    body = {k: v for k, v in meta.items() if k != "digest"}
    return {**body, "digest": _digest(body)}


def _unsealed(meta: dict[str, Any], version: int, where: str) -> dict[str, Any]:
    """``meta`` without its digest after checking it (version-1 stores have none).

    Raises:
        StoreDamagedError: the digest does not match (a changed byte in the ``zarr.json`` at ``where``).
    """
    body = {k: v for k, v in meta.items() if k != "digest"}
    if version >= 2 and meta.get("digest") != _digest(body):
        raise StoreDamagedError(f"{where}: the xmodal attributes fail their digest (changed or damaged bytes); "
                                + REPAIR_HINT)
    return body


def shard_statistics(feats: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Statistics row of one shard from float32 maps ``feats`` (n, C, H, W) and their stored values."""
    n, c = feats.shape[:2]
    flat = feats.reshape(n, -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    err = np.abs(flat - decoded.reshape(n, -1).astype(np.float64))
    peak = np.maximum(np.abs(flat).max(axis=1), 1e-12)
    row = np.zeros(_N_FIXED_STATS + c)
    row[COLUMNS.frames] = n
    row[COLUMNS.norm] = norms.sum()
    row[COLUMNS.norm_sq] = (norms**2).sum()
    row[COLUMNS.raw_bytes] = flat.size * 4
    row[COLUMNS.max_err] = err.max(initial=0.0)
    row[COLUMNS.max_rel_err] = (err.max(axis=1) / peak).max(initial=0.0)
    row[COLUMNS.zeros] = (flat == 0).mean(axis=1).sum()
    row[COLUMNS.channels:] = feats.astype(np.float64).mean(axis=(2, 3)).sum(axis=0)
    return row


def _child(group: zarr.Group, name: str, where: str) -> Any:
    """``group[name]``, or a StoreDamagedError naming the missing or unreadable metadata document."""
    try:
        return group[name]
    except (KeyError, *_UNREADABLE) as e:
        raise StoreDamagedError(f"{where}/{name}/zarr.json is missing or damaged ({type(e).__name__}: {e}); "
                                + REPAIR_HINT) from None


class Collection:
    """One frame-shape group of a store: ids, features, done bitmap, per-shard statistics."""

    def __init__(self, group: zarr.Group, name: str, objects: StoreObjects, version: int = STORE_VERSION) -> None:
        self.group, self.name, self.objects, self.version = group, name, objects, version
        self.where = objects.describe(name)
        meta = _unsealed(dict(group.attrs.get("xmodal") or {}), version, f"{self.where}/zarr.json")
        try:
            self.shape: tuple[int, int, int] = tuple(meta["shape"])  # type: ignore[assignment]
            self.input_size: tuple[int, int] = tuple(meta["input_size"])  # type: ignore[assignment]
            self.shard_frames: int = int(meta["shard_frames"])
            self.views: tuple[str, ...] = tuple(meta.get("views", ["identity"]))
        except (KeyError, TypeError, ValueError) as e:
            raise StoreDamagedError(f"{self.where}/zarr.json lacks its xmodal attributes ({e!r}); "
                                    + REPAIR_HINT) from None
        self.meta = meta
        self.features = _child(group, "features", self.where)
        self.done_array = _child(group, "done", self.where)
        self.stats_array = _child(group, "shard_stats", self.where)
        self.ids: list[str] = self._read_ids(meta.get("ids_digest"))
        self.n_frames = len(self.ids)
        self.n_shards = -(-self.n_frames // self.shard_frames)

    def _read_ids(self, expected_digest: str | None) -> list[str]:
        try:
            ids = [str(x) for x in _child(self.group, "ids", self.where)[:]]
        except _UNREADABLE as e:
            raise StoreDamagedError(f"{self.where}/ids: the frame ids are unreadable ({e}); " + REPAIR_HINT) from None
        if expected_digest is not None and ids_digest(ids) != expected_digest:
            raise StoreDamagedError(f"{self.where}/ids: the frame ids differ from those the collection was made with "
                                    "(damaged or replaced chunk); " + REPAIR_HINT)
        return ids

    def shard_rows(self, shard: int) -> range:
        """Rows (frame indices) of ``shard``."""
        return range(shard * self.shard_frames, min((shard + 1) * self.shard_frames, self.n_frames))

    @property
    def entries_per_shard(self) -> int:
        """Chunks in a shard's index: every view of every frame (frame-major)."""
        return self.shard_frames * len(self.views)

    def shard_key(self, shard: int) -> str:
        """Store key of a features shard, e.g. ``synth/features/c/3/0/0/0``."""
        return f"{self.name}/features/{self._chunk_key(self.features, shard)}"

    def chunk_key(self, array: zarr.Array, shard: int) -> str:
        """Store key of the chunk of ``array`` (one of this collection's) that holds shard ``shard``'s rows."""
        return f"{self.name}/{array.basename}/{self._chunk_key(array, shard)}"

    @staticmethod
    def _chunk_key(array: zarr.Array, shard: int) -> str:
        return array.metadata.chunk_key_encoding.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))

    def done_state(self) -> DoneState:
        """The completion bitmap, read fresh; a damaged bitmap chunk marks only its own shard unreadable."""
        try:
            return DoneState(np.asarray(self.done_array[:], dtype=bool), frozenset())
        except _UNREADABLE:
            pass  # find the damaged chunks one shard at a time
        done, bad = np.zeros(self.n_frames, dtype=bool), set()
        for k in range(self.n_shards):
            rows = self.shard_rows(k)
            try:
                done[rows.start : rows.stop] = np.asarray(self.done_array[rows.start : rows.stop], dtype=bool)
            except _UNREADABLE:
                bad.add(k)
        return DoneState(done, frozenset(bad))

    def done(self) -> np.ndarray:
        """Completion bitmap as bool (N,), read fresh (rows of unreadable bitmap chunks read as not done)."""
        return self.done_state().done

    def view_index(self, view: str) -> int:
        """Position of ``view`` along the features' view axis. Raises KeyError naming the views stored."""
        try:
            return self.views.index(view)
        except ValueError:
            raise KeyError(f"collection {self.name!r} of {self.where} stores views {list(self.views)}, not "
                           f"{view!r}") from None

    def read(self, rows: slice | Sequence[int], view: str = "identity") -> np.ndarray:
        """Decoded maps (n, C, H, W) through zarr (float32, for verification and tests; serving uses the fast
        reader)."""
        rows = rows if isinstance(rows, slice) else list(rows)
        if self.features.ndim == 4:  # format 1: one view
            self.view_index(view)
            return np.asarray(self.features.oindex[rows], dtype=np.float32)
        return np.asarray(self.features.oindex[rows, self.view_index(view)], dtype=np.float32)

    def write_shard(self, shard: int, stored: np.ndarray, stats_row: np.ndarray) -> None:
        """Write one whole shard (``stored``: (n, V, C, H, W), every view), make it durable, then its statistics,
        then mark its frames done.

        A previous file of this shard (a damaged one being repaired, or one written just before a crash that
        came before its done bits) is removed first, so zarr never merges new chunks into old bytes; so are
        temp files a killed write of this shard left behind. A full disk raises :class:`StoreFullError`
        with the shard not done.
        """
        rows = self.shard_rows(shard)
        want = (len(rows), len(self.views), *self.shape)
        if stored.shape != want:
            raise DataError(f"shard {shard} of {self.name!r} expects {want}, got {stored.shape}")
        key, objects = self.shard_key(shard), self.objects
        what = f"shard {shard} of collection {self.name!r} (frames {self.ids[rows.start]}..{self.ids[rows.stop - 1]})"
        with _write_checked(objects.location, what):
            done_chunk = self.chunk_key(self.done_array, shard)
            objects.remove(done_chunk)  # readers see "not computed" rather than a vanished file
            for chunk in (done_chunk, key, self.chunk_key(self.stats_array, shard)):  # one chunk per shard each
                objects.remove(chunk)
                objects.discard_partials(chunk)
            if not write_full_shard(self.features, shard, stored):  # zarr's path: ~5x the CPU (shard_encode)
                self.features.with_config({"write_empty_chunks": True})[rows.start : rows.stop] = stored
            objects.make_durable(key)
            row = stats_row.copy()
            row[COLUMNS.raw_bytes] = stored.size * 4  # float32 bytes of every view stored (the ratio's numerator)
            row[COLUMNS.stored_bytes] = objects.size(key)
            self.stats_array[shard] = row
            self.done_array[rows.start : rows.stop] = 1

    def mark_done(self, shard: int) -> None:
        """Set the done bits of a shard whose bytes and statistics were checked (rebuilding a damaged bitmap)."""
        rows = self.shard_rows(shard)
        with _write_checked(self.objects.location, f"the done bits of shard {shard} of {self.name!r}"):
            chunk = self.chunk_key(self.done_array, shard)
            self.objects.remove(chunk)
            self.objects.discard_partials(chunk)
            self.done_array[rows.start : rows.stop] = 1

    def record_summary(self) -> None:
        """Write :meth:`summary` into the collection's attributes (idempotent; last writer is complete)."""
        with self.objects.writer_lock(), _write_checked(self.objects.location, f"the summary of {self.name!r}"):
            self.objects.discard_partials(f"{self.name}/zarr.json")
            self.meta = {**self.meta, "summary": self.summary()}
            self.group.attrs["xmodal"] = _sealed(self.meta)

    def stats_row(self, shard: int) -> np.ndarray | None:
        """The shard's statistics row, or None when it is missing (never written, deleted) or unreadable."""
        try:
            row = np.asarray(self.stats_array[shard], dtype=np.float64)
        except _UNREADABLE:
            return None
        return row if row[COLUMNS.frames] == len(self.shard_rows(shard)) else None

    def stats_rows(self) -> np.ndarray:
        """Every shard's statistics row ((n_shards, 8 + C); zeros where missing or unreadable)."""
        try:
            return np.asarray(self.stats_array[:], dtype=np.float64)
        except _UNREADABLE:
            empty = np.zeros((_N_FIXED_STATS + self.shape[0],))
            return np.stack([r if (r := self.stats_row(k)) is not None else empty for k in range(self.n_shards)])

    def summary(self) -> dict[str, Any]:
        """Aggregate statistics over the done shards that have statistics: counts, bytes, ratio, error, norms,
        channel means. ``stats_frames < frames_done`` (and ``stats_missing_shards``) says some done shard's
        statistics are missing or damaged (``precompute`` recomputes such shards)."""
        state = self.done_state()
        done_shards = [k for k in range(self.n_shards) if k not in state.unreadable
                       and state.done[self.shard_rows(k).start : self.shard_rows(k).stop].all()]
        all_rows = self.stats_rows()
        valid = [k for k in done_shards if all_rows[k, COLUMNS.frames] == len(self.shard_rows(k))]
        out: dict[str, Any] = {"frames_done": int(state.done.sum())}
        if missing := sorted(set(done_shards) - set(valid)):
            out["stats_missing_shards"] = missing
        rows = all_rows[valid]
        frames = float(rows[:, COLUMNS.frames].sum())
        out["stats_frames"] = int(frames)
        if frames == 0:
            return out
        stored = float(rows[:, COLUMNS.stored_bytes].sum())
        raw = float(rows[:, COLUMNS.raw_bytes].sum())
        return {
            **out,
            "raw_float32_bytes": int(raw),
            "stored_bytes": int(stored),
            "compression_ratio": raw / stored if stored else None,
            "max_abs_error": float(rows[:, COLUMNS.max_err].max()),
            "max_relative_error": float(rows[:, COLUMNS.max_rel_err].max()),
            "zero_fraction": float(rows[:, COLUMNS.zeros].sum() / frames),
            "mean_l2_norm": float(rows[:, COLUMNS.norm].sum() / frames),
            "rms_l2_norm": float(np.sqrt(rows[:, COLUMNS.norm_sq].sum() / frames)),
            "channel_means": (rows[:, COLUMNS.channels:].sum(axis=0) / frames).round(6).tolist(),
        }


def _open_root(zstore: Any, location: StoreLocation, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(zstore, mode=mode)  # type: ignore[arg-type]
    except NodeNotFoundError:
        raise FileNotFoundError(f"no feature store at {location} (missing zarr.json); run `teacher-server "
                                "precompute`") from None
    except _UNREADABLE as e:
        raise StoreDamagedError(f"{location}/zarr.json is damaged ({type(e).__name__}: {e}); " + REPAIR_HINT) \
            from None


class FeatureStore:
    """A teacher's feature store in a local folder or under an ``s3://bucket/prefix`` (see ``storage.py``)."""

    def __init__(self, location: StoreLocation, group: zarr.Group, objects: StoreObjects) -> None:
        self.location, self.group, self.objects = location, group, objects
        raw = dict(group.attrs.get("xmodal", {}))
        if raw.get("format") != STORE_FORMAT:
            raise DataError(f"{location} is not a feature store (format {raw.get('format')!r}, "
                            f"expected {STORE_FORMAT!r})")
        if raw.get("version") not in _READABLE_VERSIONS:
            raise DataError(f"{location}: store version {raw.get('version')} is not supported "
                            f"(expected one of {list(_READABLE_VERSIONS)})")
        self.version = int(raw["version"])
        meta = _unsealed(raw, self.version, f"{location}/zarr.json")
        try:
            self.teacher = TeacherIdentity.model_validate(meta["teacher"])
            self.encoding = FeatureEncoding.from_dict(meta["encoding"])
            names = list(meta["collections"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreDamagedError(f"{location}/zarr.json: invalid xmodal attributes ({e}); " + REPAIR_HINT) \
                from None
        self.meta = meta
        self.collections = {n: Collection(_child(group, n, str(location)), n, objects, self.version) for n in names}

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> FeatureStore:
        """Open an existing store (read-only by default): a local folder or ``s3://bucket/prefix``.

        Raises:
            FileNotFoundError: no store at ``path``.
            StoreDamagedError: its metadata is missing, unreadable or fails a checksum (says how to repair).
            DataError: not a store of a supported version, or an S3 bucket that is missing or refused.
            ConfigError: a URL scheme with no storage backend (see ``storage.BACKENDS``).
        """
        location = StoreLocation.parse(path)
        zstore, objects = open_objects(location, read_only=mode == "r")
        if not objects.exists("zarr.json"):  # before zarr, which would create a missing local folder in "r+"
            raise FileNotFoundError(f"no feature store at {location} (missing zarr.json); run `teacher-server "
                                    "precompute`")
        return cls(location, _open_root(zstore, location, mode), objects)

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        teacher: TeacherIdentity,
        encoding: FeatureEncoding,
        specs: Sequence[CollectionSpec],
        shard_frames: int,
        extra_attrs: dict[str, Any] | None = None,
        repair: bool = False,
    ) -> FeatureStore:
        """Open the store at ``path`` (folder or ``s3://bucket/prefix``) for writing, creating what is missing.

        Creation never deletes: writers started together on object storage (no lock there) or a creation
        cut short by a crash all end with the same groups and arrays (see :func:`_ensure_array`). With
        ``repair``, damaged metadata (a ``zarr.json``, the ids) is rewritten from ``teacher``, ``encoding`` and
        ``specs`` — never the shards, which ``precompute`` checks one by one.

        Raises:
            StoreMismatchError: the store exists with another teacher or encoding, or a collection exists
                with other ids or shape (delete the store or choose another path).
            StoreDamagedError: damaged metadata and ``repair`` is off.
        """
        location = StoreLocation.parse(path)
        zstore, objects = open_objects(location, read_only=False)
        fresh = {"format": STORE_FORMAT, "version": STORE_VERSION, "teacher": json.loads(teacher.model_dump_json()),
                 "encoding": encoding.to_dict(), "collections": [], **(extra_attrs or {})}
        with _write_checked(location, "its metadata and frame ids"), objects.writer_lock():
            group, meta = _root_for_write(zstore, objects, location, fresh, repair)
            if meta["teacher"] != fresh["teacher"]:
                raise StoreMismatchError(
                    f"store {location} holds features of teacher {meta['teacher'].get('arch')!r} "
                    f"({str(meta['teacher'].get('weights_digest', '?'))[:12]}), not {teacher.short_id()}")
            if meta["encoding"] != fresh["encoding"]:
                raise StoreMismatchError(f"store {location} uses encoding {meta['encoding']}, not {fresh['encoding']}")
            for spec in specs:
                if spec.name in meta["collections"]:
                    col = _collection_for_write(group, spec, encoding, shard_frames, objects, teacher, repair)
                    _check_collection(location, col, spec)
                else:
                    _create_collection(group, spec, encoding, shard_frames, teacher, objects)
                    meta["collections"] = [*meta["collections"], spec.name]
            group.attrs["xmodal"] = _sealed(meta)
        return cls(location, group, objects)


def _root_for_write(zstore: Any, objects: StoreObjects, location: StoreLocation, fresh: dict[str, Any],
                    repair: bool) -> tuple[zarr.Group, dict[str, Any]]:
    """The root group and its xmodal attributes; a damaged root rewritten from ``fresh`` when repairing (listing
    this run's collections: any other collection folder comes back when a run with its manifests repairs it).

    Raises:
        StoreDamagedError: damaged and not ``repair``.  DataError: not a version-2 feature store.
    """
    try:
        group = _ensure(lambda: zarr.open_group(zstore, mode="a"), lambda: zarr.open_group(zstore, mode="r+"))
        raw = dict(group.attrs.get("xmodal", {}))
        if not raw:
            return group, dict(fresh)
        if raw.get("format") != STORE_FORMAT:
            raise DataError(f"{location} is not a feature store (format {raw.get('format')!r})")
        if raw.get("version") == 1:
            raise DataError(f"{location} is a version-1 feature store (no chunk checksums); precompute writes "
                            f"version {STORE_VERSION} only: `teacher-server migrate --store {location} --out NEW` "
                            "copies it into a new store (serve and verify still read it as it is)")
        if raw.get("version") != STORE_VERSION:
            raise DataError(f"{location}: store version {raw.get('version')!r} is not supported")
        return group, _unsealed(raw, STORE_VERSION, f"{location}/zarr.json")
    except (StoreDamagedError, *_UNREADABLE) as e:
        if isinstance(e, DataError) and not isinstance(e, StoreDamagedError):
            raise
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:  # a write that failed, not a damaged read
            raise
        if not repair:
            raise StoreDamagedError(str(e) if isinstance(e, StoreDamagedError) else
                                    f"{location}/zarr.json is damaged ({type(e).__name__}: {e}); " + REPAIR_HINT) \
                from None
    log.warning("store %s: rewriting its damaged zarr.json from this run's teacher and encoding", location)
    objects.remove("zarr.json")
    return zarr.open_group(zstore, mode="a"), dict(fresh)


def _collection_for_write(group: zarr.Group, spec: CollectionSpec, enc: FeatureEncoding, shard_frames: int,
                          objects: StoreObjects, teacher: TeacherIdentity, repair: bool) -> Collection:
    """The existing collection; with ``repair``, its damaged metadata rebuilt from ``spec``."""
    try:
        return Collection(_child(group, spec.name, str(objects.location)), spec.name, objects)
    except StoreDamagedError:
        if not repair:
            raise
    log.warning("store %s: rebuilding damaged metadata of collection %r", objects.location, spec.name)
    _create_collection(group, spec, enc, shard_frames, teacher, objects, rebuild=True)
    return Collection(group[spec.name], spec.name, objects)


def _check_collection(location: StoreLocation, col: Collection, spec: CollectionSpec) -> None:
    if col.shape != spec.shape or tuple(col.ids) != tuple(spec.ids):
        raise StoreMismatchError(
            f"collection {spec.name!r} in {location} holds {col.n_frames} frames of shape {col.shape}; this run "
            f"has {len(spec.ids)} frames of shape {spec.shape} (same manifest and input size expected)"
        )
    if col.views != tuple(spec.views):
        raise StoreMismatchError(f"collection {spec.name!r} in {location} stores views {list(col.views)}, this run "
                                 f"asks for {list(spec.views)} (pass --views {' '.join(col.views)} or use another "
                                 "store)")


def _ensure(create: Callable[[], _Node], existing: Callable[[], _Node]) -> _Node:
    """``create()`` unless the node exists; an existing one (another writer's, or a crashed creation's) is
    kept with its chunks, so creation is idempotent without a lock and never wipes finished shards."""
    try:
        return create()
    except (ContainsArrayError, ContainsGroupError):
        return existing()


def _ensure_array(group: zarr.Group, name: str, objects: StoreObjects, rebuild: bool, **kwargs: Any) -> zarr.Array:
    """Create the array unless it exists; with ``rebuild``, an existing one whose metadata cannot be read gets
    fresh metadata (its chunks stay where they are and are checked by their CRC32Cs when read)."""
    if rebuild:
        try:
            return group[name]  # type: ignore[return-value]
        except (KeyError, *_UNREADABLE):
            objects.remove(f"{group.path}/{name}/zarr.json")
    return _ensure(lambda: group.create_array(name, **kwargs), lambda: group[name])  # type: ignore[return-value]


_CHECKED = [ZstdCodec(level=1), Crc32cCodec()]  # bytes-to-bytes codecs of the ids, done and shard_stats arrays


def _create_collection(group: zarr.Group, spec: CollectionSpec, enc: FeatureEncoding, shard_frames: int,
                       teacher: TeacherIdentity, objects: StoreObjects, rebuild: bool = False) -> None:
    """Create one collection or, with ``rebuild``, re-create its damaged metadata.

    The ids are rewritten from ``spec`` only where that provably restores them: the digest recorded at creation
    matches the spec's ids. When both the ids and that digest are lost, which frame a shard holds cannot be
    proven, and rebuilding refuses.

    Raises:
        StoreMismatchError: the spec's ids are not those the collection was made with.
        StoreDamagedError: ids and attributes both damaged.
    """
    for fid in spec.ids:
        validate_frame_id(fid)
    if not spec.views or spec.views[0] != "identity" or len(set(spec.views)) != len(spec.views) \
            or not set(spec.views) <= set(VIEWS):
        raise ValueError(f"views must start with 'identity' and name each of {list(VIEWS)} at most once, got "
                         f"{list(spec.views)}")
    n, (c, h, w), v = len(spec.ids), spec.shape, len(spec.views)
    where = objects.describe(spec.name)
    try:
        sub = _ensure(lambda: group.create_group(spec.name), lambda: group[spec.name])
        meta = dict(sub.attrs.get("xmodal") or {})
    except _UNREADABLE:
        if not rebuild:
            raise
        objects.remove(f"{spec.name}/zarr.json")
        sub, meta = group.create_group(spec.name), {}
    if rebuild and meta and _digest({k: v for k, v in meta.items() if k != "digest"}) != meta.get("digest"):
        meta = {}  # attributes that fail their digest are not evidence of anything
    s = max(1, min(int(meta.get("shard_frames", shard_frames)), n))
    compressors = [ZstdCodec(level=enc.level, checksum=enc.checksum), *([Crc32cCodec()] if enc.crc32c else [])]
    serializer: Any = QuantizeCodec(enc.quantizer) if enc.quantizer is not None else "auto"
    _ensure_array(
        sub, "features", objects, rebuild, shape=(n, v, c, h, w), dtype=enc.dtype, chunks=(1, 1, c, h, w),
        shards=(s, v, c, h, w), serializer=serializer, compressors=compressors, fill_value=0,
        config={"write_empty_chunks": True},  # an all-zero map is still a stored chunk the server can send
        dimension_names=("frame", "view", "channel", "y", "x"),
    )
    ids = _ensure_array(sub, "ids", objects, rebuild, shape=(n,), dtype=str, chunks=(min(n, 65536),),
                        compressors=_CHECKED)
    stored_ids = _readable_ids(ids) if rebuild else None
    if rebuild and stored_ids != list(spec.ids):
        recorded = meta.get("ids_digest")
        if stored_ids is not None and recorded is None:
            recorded = ids_digest(stored_ids)  # readable ids are the record when the attributes are lost
        if recorded is None:
            raise StoreDamagedError(f"{where}: both its ids and its attributes are damaged, so which frame each shard "
                                    f"holds cannot be proven; delete {where} and rerun precompute to recompute it")
        if recorded != ids_digest(spec.ids):
            raise StoreMismatchError(f"collection {spec.name!r} in {objects.location}: this run's manifests list "
                                     "other frames (or another order) than the collection was made with; repair "
                                     "needs the same manifests")
    if not rebuild or stored_ids != list(spec.ids):
        ids[:] = np.asarray(spec.ids, dtype=object)
    _ensure_array(sub, "done", objects, rebuild, shape=(n,), dtype="uint8", chunks=(s,), fill_value=0,
                  compressors=_CHECKED)
    n_shards = -(-n // s)
    _ensure_array(sub, "shard_stats", objects, rebuild, shape=(n_shards, _N_FIXED_STATS + c), dtype="float64",
                  chunks=(1, _N_FIXED_STATS + c), fill_value=0.0, compressors=_CHECKED)
    attrs = {**meta, "shape": [c, h, w], "views": list(spec.views), "input_size": list(spec.input_size),
             "shard_frames": s, "frames": n,
             "ids_digest": ids_digest(spec.ids), "teacher_id": teacher.short_id()}
    sub.attrs["xmodal"] = _sealed(attrs)


def _readable_ids(ids: zarr.Array) -> list[str] | None:
    try:
        return [str(x) for x in ids[:]]
    except _UNREADABLE:
        return None
