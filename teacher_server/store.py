"""The Zarr v3 feature store: one group per teacher, one sub-group ("collection") per frame-shape group.

Layout (all Zarr v3)::

    <store>/zarr.json                      attributes["xmodal"]: format, version, teacher, encoding, collections
    <store>/<collection>/zarr.json         attributes["xmodal"]: shape (C, H, W), input_size, shard_frames, frames
    <store>/<collection>/features          (N, C, H, W): chunk = 1 frame, shard = ``shard_frames`` frames
    <store>/<collection>/ids               (N,) UTF-8 frame ids (row i holds frame ids[i])
    <store>/<collection>/done              (N,) uint8 completion bitmap, chunked by shard
    <store>/<collection>/shard_stats       (n_shards, 8 + C) float64 per-shard statistics (see STAT_*)

Writers own whole shards: a shard's features are written in one ``set`` (zarr's LocalStore writes a
temp file and renames it), fsynced, then its statistics, and only then its ``done`` bits. A crash at
any point leaves at worst a shard that is rewritten on resume; a reader never sees a done frame whose
bytes are not on disk. Per-shard statistics live in their own rows so concurrent workers never write
the same object.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, NodeNotFoundError

from shared.errors import DataError, XModalError
from shared.features import FeatureEncoding
from shared.identity import TeacherIdentity
from shared.ids import validate_frame_id
from teacher_server.storage import StoreLocation, StoreObjects, open_objects

__all__ = [
    "STORE_FORMAT",
    "STORE_VERSION",
    "Collection",
    "CollectionSpec",
    "FeatureStore",
    "StoreFullError",
    "StoreMismatchError",
    "shard_statistics",
]

STORE_FORMAT = "xmodal-features"
STORE_VERSION = 1
# Columns of shard_stats: frames, sum of per-frame L2 norms, sum of squared norms, raw float32 bytes,
# stored (compressed shard file) bytes, max |x - stored|, max relative error (vs the frame's max |x|),
# sum over frames of the fraction of exact zeros; then per-channel sums of spatial means (C columns).
STAT_FRAMES, STAT_NORM, STAT_NORM_SQ, STAT_RAW_BYTES, STAT_STORED_BYTES, STAT_MAX_ERR, STAT_MAX_REL_ERR, STAT_ZEROS = (
    range(8)
)
_N_FIXED_STATS = 8
_Node = TypeVar("_Node")


class StoreMismatchError(XModalError, ValueError):
    """An existing store was made with a different teacher, encoding or frame list."""


class StoreFullError(XModalError, OSError):
    """The store's filesystem ran out of space (or quota); what was being written is not marked done."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _space_checked(root: StoreLocation, what: str) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT into a :class:`StoreFullError` that names the store and says how to resume."""
    try:
        yield
    except OSError as e:
        if e.errno not in _FULL_ERRNOS:
            raise
        raise StoreFullError(
            f"store {root}: no space left on device while writing {what} ({e}); it is not marked "
            "done: free some space and rerun the same command to resume"
        ) from e


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection will hold: its frame ids in row order, map shape and teacher input size."""

    name: str
    ids: tuple[str, ...]
    shape: tuple[int, int, int]
    input_size: tuple[int, int]


def shard_statistics(feats: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Statistics row of one shard from float32 maps ``feats`` (n, C, H, W) and their stored values."""
    n, c = feats.shape[:2]
    flat = feats.reshape(n, -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    err = np.abs(flat - decoded.reshape(n, -1).astype(np.float64))
    peak = np.maximum(np.abs(flat).max(axis=1), 1e-12)
    row = np.zeros(_N_FIXED_STATS + c)
    row[STAT_FRAMES] = n
    row[STAT_NORM] = norms.sum()
    row[STAT_NORM_SQ] = (norms**2).sum()
    row[STAT_RAW_BYTES] = flat.size * 4
    row[STAT_MAX_ERR] = err.max(initial=0.0)
    row[STAT_MAX_REL_ERR] = (err.max(axis=1) / peak).max(initial=0.0)
    row[STAT_ZEROS] = (flat == 0).mean(axis=1).sum()
    row[_N_FIXED_STATS:] = feats.astype(np.float64).mean(axis=(2, 3)).sum(axis=0)
    return row


class Collection:
    """One frame-shape group of a store: ids, features, done bitmap, per-shard statistics."""

    def __init__(self, group: zarr.Group, name: str, objects: StoreObjects) -> None:
        self.group, self.name, self.objects = group, name, objects
        meta = dict(group.attrs["xmodal"])
        self.shape: tuple[int, int, int] = tuple(meta["shape"])  # type: ignore[assignment]
        self.input_size: tuple[int, int] = tuple(meta["input_size"])  # type: ignore[assignment]
        self.shard_frames: int = int(meta["shard_frames"])
        self.features = group["features"]
        self.done_array = group["done"]
        self.stats_array = group["shard_stats"]
        self.ids: list[str] = [str(x) for x in group["ids"][:]]
        self.n_frames = len(self.ids)
        self.n_shards = -(-self.n_frames // self.shard_frames)

    def shard_rows(self, shard: int) -> range:
        """Rows (frame indices) of ``shard``."""
        return range(shard * self.shard_frames, min((shard + 1) * self.shard_frames, self.n_frames))

    def shard_key(self, shard: int) -> str:
        """Store key of a features shard, e.g. ``synth/features/c/3/0/0/0``."""
        return f"{self.name}/features/{self._chunk_key(self.features, shard)}"

    @staticmethod
    def _chunk_key(array: zarr.Array, shard: int) -> str:
        """Key (inside ``array``) of the chunk or shard that holds shard ``shard``'s rows."""
        return array.metadata.chunk_key_encoding.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))

    def done(self) -> np.ndarray:
        """Completion bitmap as bool (N,), read fresh from the store."""
        return np.asarray(self.done_array[:], dtype=bool)

    def shard_done(self, shard: int) -> bool:
        rows = self.shard_rows(shard)
        return bool(np.all(self.done_array[rows.start : rows.stop]))

    def read(self, rows: slice | Sequence[int]) -> np.ndarray:
        """Decoded maps through zarr (float32, for verification and tests; serving uses the fast reader)."""
        return np.asarray(self.features.oindex[rows] if not isinstance(rows, slice) else self.features[rows],
                          dtype=np.float32)

    def write_shard(self, shard: int, stored: np.ndarray, stats_row: np.ndarray) -> None:
        """Write one whole shard, make it durable, then its statistics, then mark its frames done.

        A previous file of this shard (a damaged one being repaired, or one written just before a crash that
        came before its done bits) is removed first, so zarr never merges new chunks into old bytes; so are
        temp files a killed write of this shard left behind. A full disk raises :class:`StoreFullError`
        with the shard not done.
        """
        rows = self.shard_rows(shard)
        if stored.shape != (len(rows), *self.shape):
            raise DataError(f"shard {shard} of {self.name!r} expects {(len(rows), *self.shape)}, got {stored.shape}")
        key, objects = self.shard_key(shard), self.objects
        what = f"shard {shard} of collection {self.name!r} (frames {self.ids[rows.start]}..{self.ids[rows.stop - 1]})"
        with _space_checked(objects.location, what):
            if self.shard_done(shard):  # repair: readers see "not computed" rather than a vanished file
                self.done_array[rows.start : rows.stop] = 0
            objects.remove(key)
            for array in (self.features, self.stats_array, self.done_array):  # each has one chunk per shard
                objects.discard_partials(f"{self.name}/{array.basename}/{self._chunk_key(array, shard)}")
            self.features[rows.start : rows.stop] = stored
            objects.make_durable(key)
            row = stats_row.copy()
            row[STAT_STORED_BYTES] = objects.size(key)
            self.stats_array[shard] = row
            self.done_array[rows.start : rows.stop] = 1

    def record_summary(self) -> None:
        """Write :meth:`summary` into the collection's attributes (idempotent; last writer is complete)."""
        with self.objects.writer_lock(), _space_checked(self.objects.location, f"the summary of {self.name!r}"):
            self.objects.discard_partials(f"{self.name}/zarr.json")
            meta = dict(self.group.attrs["xmodal"])
            meta["summary"] = self.summary()
            self.group.attrs["xmodal"] = meta

    def stats_rows(self) -> np.ndarray:
        return np.asarray(self.stats_array[:], dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Aggregate statistics over the done shards: counts, bytes, ratio, error, norms, channel means."""
        rows = self.stats_rows()
        rows = rows[rows[:, STAT_FRAMES] > 0]
        frames = float(rows[:, STAT_FRAMES].sum())
        if frames == 0:
            return {"frames_done": 0}
        stored = float(rows[:, STAT_STORED_BYTES].sum())
        raw = float(rows[:, STAT_RAW_BYTES].sum())
        mean_norm = float(rows[:, STAT_NORM].sum() / frames)
        return {
            "frames_done": int(frames),
            "raw_float32_bytes": int(raw),
            "stored_bytes": int(stored),
            "compression_ratio": raw / stored if stored else None,
            "max_abs_error": float(rows[:, STAT_MAX_ERR].max()),
            "max_relative_error": float(rows[:, STAT_MAX_REL_ERR].max()),
            "zero_fraction": float(rows[:, STAT_ZEROS].sum() / frames),
            "mean_l2_norm": mean_norm,
            "rms_l2_norm": float(np.sqrt(rows[:, STAT_NORM_SQ].sum() / frames)),
            "channel_means": (rows[:, _N_FIXED_STATS:].sum(axis=0) / frames).round(6).tolist(),
        }


class FeatureStore:
    """A teacher's feature store in a local folder or under an ``s3://bucket/prefix`` (see ``storage.py``)."""

    def __init__(self, location: StoreLocation, group: zarr.Group, objects: StoreObjects) -> None:
        self.location, self.group, self.objects = location, group, objects
        meta = dict(group.attrs.get("xmodal", {}))
        if meta.get("format") != STORE_FORMAT:
            raise DataError(f"{location} is not a feature store (format {meta.get('format')!r}, "
                            f"expected {STORE_FORMAT!r})")
        if meta.get("version") != STORE_VERSION:
            raise DataError(f"{location}: store version {meta.get('version')} is not supported "
                            f"(expected {STORE_VERSION})")
        self.meta = meta
        self.teacher = TeacherIdentity.model_validate(meta["teacher"])
        self.encoding = FeatureEncoding.from_dict(meta["encoding"])
        self.collections = {name: Collection(group[name], name, objects) for name in meta["collections"]}

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r") -> FeatureStore:
        """Open an existing store (read-only by default): a local folder or ``s3://bucket/prefix``.

        Raises:
            FileNotFoundError: no store at ``path``.
            DataError: not a store of a supported version, or an S3 bucket that is missing or refused.
            ConfigError: a URL scheme other than s3://.
        """
        location = StoreLocation.parse(path)
        missing = f"no feature store at {location} (missing zarr.json); run `teacher-server precompute`"
        if location.path is not None and not (location.path / "zarr.json").is_file():
            raise FileNotFoundError(missing)
        zstore, objects = open_objects(location, read_only=mode == "r")
        try:
            group = zarr.open_group(zstore, mode=mode)  # type: ignore[arg-type]
        except NodeNotFoundError:
            raise FileNotFoundError(missing) from None
        return cls(location, group, objects)

    @classmethod
    def create_or_open(
        cls,
        path: str | os.PathLike[str],
        teacher: TeacherIdentity,
        encoding: FeatureEncoding,
        specs: Sequence[CollectionSpec],
        shard_frames: int,
        extra_attrs: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Open the store at ``path`` (folder or ``s3://bucket/prefix``) for writing, creating what is missing.

        Creation never deletes: writers started together on object storage (no lock there) or a creation
        cut short by a crash all end with the same groups and arrays (see :func:`_ensure_array`).

        Raises:
            StoreMismatchError: the store exists with another teacher or encoding, or a collection exists
                with other ids or shape (delete the store or choose another path).
        """
        location = StoreLocation.parse(path)
        zstore, objects = open_objects(location, read_only=False)
        with _space_checked(location, "its metadata and frame ids"), objects.writer_lock():
            group = _ensure(lambda: zarr.open_group(zstore, mode="a"), lambda: zarr.open_group(zstore, mode="r+"))
            meta = dict(group.attrs.get("xmodal", {}))
            if meta:
                if meta.get("teacher") != json.loads(teacher.model_dump_json()):
                    raise StoreMismatchError(
                        f"store {location} holds features of teacher {meta.get('teacher', {}).get('arch')!r} "
                        f"({meta.get('teacher', {}).get('weights_digest', '?')[:12]}), not {teacher.short_id()}"
                    )
                if meta.get("encoding") != encoding.to_dict():
                    have, want = meta.get("encoding"), encoding.to_dict()
                    raise StoreMismatchError(f"store {location} uses encoding {have}, not {want}")
            else:
                meta = {
                    "format": STORE_FORMAT, "version": STORE_VERSION, "teacher": json.loads(teacher.model_dump_json()),
                    "encoding": encoding.to_dict(), "collections": [], **(extra_attrs or {}),
                }
            for spec in specs:
                if spec.name in meta["collections"]:
                    _check_collection(location, Collection(group[spec.name], spec.name, objects), spec)
                else:
                    _create_collection(group, spec, encoding, shard_frames)
                    meta["collections"] = [*meta["collections"], spec.name]
            group.attrs["xmodal"] = meta
        return cls(location, group, objects)


def _check_collection(location: StoreLocation, col: Collection, spec: CollectionSpec) -> None:
    if col.shape != spec.shape or tuple(col.ids) != tuple(spec.ids):
        raise StoreMismatchError(
            f"collection {spec.name!r} in {location} holds {col.n_frames} frames of shape {col.shape}; this run "
            f"has {len(spec.ids)} frames of shape {spec.shape} (same manifest and input size expected)"
        )


def _ensure(create: Callable[[], _Node], existing: Callable[[], _Node]) -> _Node:
    """``create()`` unless the node exists; an existing one (another writer's, or a crashed creation's) is
    kept with its chunks, so creation is idempotent without a lock and never wipes finished shards."""
    try:
        return create()
    except (ContainsArrayError, ContainsGroupError):
        return existing()


def _ensure_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    return _ensure(lambda: group.create_array(name, **kwargs), lambda: group[name])  # type: ignore[return-value]


def _create_collection(group: zarr.Group, spec: CollectionSpec, enc: FeatureEncoding, shard_frames: int) -> None:
    for fid in spec.ids:
        validate_frame_id(fid)
    n, (c, h, w) = len(spec.ids), spec.shape
    sub = _ensure(lambda: group.create_group(spec.name), lambda: group[spec.name])
    s = max(1, min(shard_frames, n))
    _ensure_array(
        sub, "features", shape=(n, c, h, w), dtype=enc.dtype, chunks=(1, c, h, w), shards=(s, c, h, w),
        compressors=[ZstdCodec(level=enc.level, checksum=enc.checksum)], fill_value=0,
        config={"write_empty_chunks": True},  # an all-zero map is still a stored chunk the server can send
        dimension_names=("frame", "channel", "y", "x"),
    )
    ids = _ensure_array(sub, "ids", shape=(n,), dtype=str, chunks=(min(n, 65536),))
    ids[:] = np.asarray(spec.ids, dtype=object)
    _ensure_array(sub, "done", shape=(n,), dtype="uint8", chunks=(s,), fill_value=0)
    n_shards = -(-n // s)
    _ensure_array(sub, "shard_stats", shape=(n_shards, _N_FIXED_STATS + c), dtype="float64",
                  chunks=(1, _N_FIXED_STATS + c), fill_value=0.0)
    sub.attrs["xmodal"] = {"shape": [c, h, w], "input_size": list(spec.input_size), "shard_frames": s, "frames": n}
