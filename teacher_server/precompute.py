"""Precompute: run a frozen teacher over the RGB frames of manifests and fill the feature store.

Frames are grouped into collections by dataset; each worker (``--worker i/n``) owns the shards
``k`` with ``k % n == i`` and processes them whole, batches never crossing a shard boundary (so a
resumed or sharded run computes exactly the batches a clean run does). A shard is marked done only
after its bytes are durable; a rerun skips done shards, ``repair`` recomputes damaged ones.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import torch
from torch.distributed import ReduceOp
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from shared.device import autocast, autocast_dtype, select_device
from shared.distributed import Ranks, reduce_over_ranks
from shared.errors import ConfigError, DataError
from shared.features import VIEWS, FeatureEncoding
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from shared.nets.geometry import feature_size
from shared.nets.teachers import LoadedTeacher
from teacher_server.shard_writer import HostMaps, ShardWriter, to_host
from teacher_server.store import Collection, CollectionSpec, FeatureStore
from teacher_server.verify import shard_damage

__all__ = ["PrecomputeSummary", "WorkerSlot", "collection_specs", "default_loader_workers", "frame_loader",
           "precompute", "teacher_views", "total_over_ranks", "worker_slot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSlot:
    """This process's share of the shards: ``index`` of ``count`` workers."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> WorkerSlot:
        """Parse ``i/n`` (0-based i). Raises ValueError quoting the text."""
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise ValueError(f"--worker must look like i/n (e.g. 0/2), got {text!r}") from None
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"--worker {text!r}: need 0 <= i < n")
        return cls(i, n)

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index


def worker_slot(flag: str | None, ranks: Ranks) -> WorkerSlot:
    """``--worker i/n`` if given, else torchrun's ``RANK/WORLD_SIZE`` (0/1 for a plain start).

    Raises:
        ConfigError: both are given (torchrun with more than one rank) and name different slots.
    """
    from_env = WorkerSlot(ranks.rank, ranks.world_size)
    if flag is None:
        return from_env
    try:
        slot = WorkerSlot.parse(flag)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if ranks.distributed and slot != from_env:
        raise ConfigError(f"--worker {flag} disagrees with torchrun's RANK={ranks.rank} WORLD_SIZE={ranks.world_size}; "
                          "drop --worker under torchrun (each rank takes its own slot)")
    return slot


@dataclass
class PrecomputeSummary:
    frames_computed: int = 0
    frames_skipped: int = 0
    shards_written: int = 0
    seconds: float = 0.0
    collections: dict[str, dict] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames_computed / self.seconds if self.seconds > 0 else 0.0


def _image_size(path: Path) -> tuple[int, int]:
    img = read_rgb(path)
    return img.shape[0], img.shape[1]


def collection_specs(
    manifests: Sequence[Path], splits: Sequence[str] | None, teacher: LoadedTeacher, input_size: tuple[int, int] | None,
    views: Sequence[str] = VIEWS,
) -> tuple[list[CollectionSpec], dict[str, list[Path]]]:
    """One collection per dataset: frame ids, RGB paths, pool5 shape for the teacher's input size, the views."""
    frames: dict[str, list[tuple[str, Path]]] = {}
    for mpath in manifests:
        m = read_manifest(mpath)
        chosen = [f for f in m if splits is None or f.split in splits]
        frames.setdefault(m.header.dataset, []).extend((f.id, m.path(f.rgb)) for f in chosen)
    specs, paths = [], {}
    for name, items in frames.items():
        if not items:
            raise DataError(f"no frames of dataset {name!r} in splits {list(splits or [])}")
        hw = input_size or _image_size(items[0][1])
        h5, w5 = feature_size(teacher.trunk, hw)
        shape = (teacher.identity.out_channels, h5, w5)
        specs.append(CollectionSpec(name=name, ids=tuple(i for i, _ in items), shape=shape, input_size=hw,
                                    views=tuple(views)))
        paths[name] = [p for _, p in items]
    return specs, paths


class _RgbFrames(Dataset):
    """RGB frames normalised for the teacher; a size mismatch is an error unless resizing was asked for."""

    def __init__(self, paths: list[Path], input_hw: tuple[int, int], mean, std, resize: bool) -> None:
        self.paths, self.hw, self.resize = paths, input_hw, resize
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = read_rgb(self.paths[i])
        if img.shape[:2] != self.hw:
            if not self.resize:
                raise DataError(
                    f"{self.paths[i]} is {img.shape[0]}x{img.shape[1]} but this collection's frames are "
                    f"{self.hw[0]}x{self.hw[1]}; pass --input-size to resize every frame"
                )
            img = cv2.resize(img, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std


class _ShardBatches(Sampler[list[int]]):
    """Batches of rows, shard by shard, never crossing a shard boundary (identical across resumes)."""

    def __init__(self, col: Collection, shards: Sequence[int], batch_size: int) -> None:
        self.batches = [
            list(rows[i : i + batch_size]) for k in shards for rows in [col.shard_rows(k)]
            for i in range(0, len(rows), batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def shards_to_compute(store: FeatureStore, col: Collection, owned: Sequence[int], repair: bool) -> list[int]:
    """The owned shards this run must (re)compute: those not done, and those marked done that fail a check.

    Every run checks the shards it would skip structurally (the object opens, its index passes its CRC32C, its
    statistics row exists), so a done frame is never reported while its bytes are unreadable; ``repair`` also
    reads every chunk against its CRC32C. With ``repair``, a shard whose done-bitmap chunk is damaged but whose
    bytes and statistics check out is marked done again instead of recomputed.
    """
    state = col.done_state()
    todo = []
    for k in owned:
        rows = col.shard_rows(k)
        where = f"shard {k} of {col.name!r} ({store.objects.describe(col.shard_key(k))})"
        if k in state.unreadable:
            if repair and not shard_damage(store, col, k):
                log.warning("%s: rebuilt its damaged done bits (its bytes and statistics check out)", where)
                col.mark_done(k)
                continue
            log.warning("%s is recomputed: its done-bitmap chunk is damaged", where)
            todo.append(k)
        elif not state.done[rows.start : rows.stop].all():
            todo.append(k)
        elif damage := shard_damage(store, col, k, deep=repair):
            log.warning("%s is recomputed: %s", where, damage[0].reason)
            todo.append(k)
    return todo


def default_loader_workers(device: torch.device) -> int:
    """``loader_workers`` when not given: 2 on the CPU, where the workers share the cores with the forward; on
    CUDA, where the forward leaves the host's cores to PNG decoding, one per core this process may run on, split
    between torchrun's ranks on the host (``LOCAL_WORLD_SIZE``)."""
    if device.type != "cuda":
        return 2
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(2, len(os.sched_getaffinity(0)) // ranks_here)


def frame_loader(col: Collection, paths: list[Path], teacher: LoadedTeacher, shards: Sequence[int], batch_size: int,
                 workers: int, device: torch.device, resize: bool) -> DataLoader:
    """The normalised RGB frames of ``shards`` (``paths``: one per row of ``col``) in batches (B, 3, H, W) float32,
    shard by shard, decoded in ``workers`` processes (pinned for a CUDA ``device``)."""
    data = _RgbFrames(paths, col.input_size, teacher.identity.mean, teacher.identity.std, resize=resize)
    return DataLoader(data, batch_sampler=_ShardBatches(col, shards, batch_size), num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=False)


def teacher_views(trunk: torch.nn.Module, x: torch.Tensor, mirror: bool, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The teacher's maps (B, V, C, H, W) of a batch ``x`` (B, 3, H, W) on the trunk's device: the identity view,
    then (``mirror``) the map of each frame mirrored left-right, under autocast in ``amp_dtype`` (None: float32)."""
    with autocast(x.device, amp_dtype):
        views = [trunk(x), *([trunk(torch.flip(x, dims=[3]))] if mirror else [])]
    return torch.stack(views, dim=1)


def _forward_shards(loader: DataLoader, trunk: torch.nn.Module, col: Collection, todo: Sequence[int],
                    writer: ShardWriter, device: torch.device, amp_dtype: torch.dtype | None, bar: tqdm) -> None:
    """The teacher's forward over the loader's batches (every view of each), handing each finished shard to the
    writer. Decoding runs in the loader's workers and writing in the writer's thread, so this loop only feeds
    the device."""
    mirror = "mirror" in col.views
    pending: list[HostMaps] = []
    shards = iter(todo)
    shard, filled = next(shards), 0
    with torch.inference_mode():
        for x in loader:
            x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            pending.append(to_host(teacher_views(trunk, x, mirror, amp_dtype)))
            filled += len(x)
            bar.update(len(x))
            if filled == len(col.shard_rows(shard)):
                writer.submit(shard, pending)
                pending, filled = [], 0
                shard = next(shards, -1)


def precompute(
    store_path: str | Path,
    manifests: Sequence[Path],
    teacher: LoadedTeacher,
    encoding: FeatureEncoding,
    *,
    splits: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    shard_frames: int = 256,
    batch_size: int = 32,
    loader_workers: int | None = None,
    device: torch.device | None = None,
    amp: bool | None = None,
    views: Sequence[str] = VIEWS,
    worker: WorkerSlot = WorkerSlot(),
    repair: bool = False,
    progress: bool = True,
) -> PrecomputeSummary:
    """Compute and store the teacher's pool5 for every frame this worker owns that is not done yet.

    ``store_path`` is a folder or ``s3://bucket/prefix``; either way each worker writes only its own shards.
    ``views``: ``identity`` and, by default, ``mirror`` (the map of each frame mirrored left-right, computed by a
    second forward: what a student trained on mirrored inputs must regress). ``amp``: see
    :data:`shared.settings.AMP_HELP`. ``loader_workers``: None = :func:`default_loader_workers`. On the CPU, start
    the process with ``teacher_server.cli.PIPELINE_OPENMP`` in the environment (the CLI does).
    """
    t0 = time.perf_counter()
    device = device or select_device("auto")
    specs, paths = collection_specs(manifests, splits, teacher, input_size, views)
    store = FeatureStore.create_or_open(store_path, teacher.identity, encoding, specs, shard_frames, repair=repair)
    trunk = teacher.trunk.to(device, memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(device, amp)
    summary = PrecomputeSummary()
    for spec in specs:
        col = store.collections[spec.name]
        owned = [k for k in range(col.n_shards) if worker.owns(k)]
        todo = shards_to_compute(store, col, owned, repair)
        summary.frames_skipped += sum(len(col.shard_rows(k)) for k in owned if k not in todo)
        if not todo:  # a run that stopped after its last shard (kill -9, full disk) left the summary stale
            col.record_summary()
            summary.collections[spec.name] = col.summary()
            continue
        workers = default_loader_workers(device) if loader_workers is None else loader_workers
        loader = frame_loader(col, paths[spec.name], teacher, todo, batch_size, workers, device,
                              resize=input_size is not None)
        bar = tqdm(total=sum(len(col.shard_rows(k)) for k in todo), desc=f"precompute {spec.name}", unit="frame",
                   disable=not progress)
        writer = ShardWriter(col, encoding)
        try:
            _forward_shards(loader, trunk, col, todo, writer, device, amp_dtype, bar)
        finally:
            writer.close()  # the shards already computed are written even when the loop fails
            summary.frames_computed += writer.frames_written
            summary.shards_written += writer.shards_written
        bar.close()
        col.record_summary()
        summary.collections[spec.name] = col.summary()
    summary.seconds = time.perf_counter() - t0
    return summary


def total_over_ranks(summary: PrecomputeSummary, store_path: str | Path, ranks: Ranks) -> PrecomputeSummary:
    """The whole run's summary, called by every rank after its :func:`precompute`: counts summed, time of the
    slowest rank, and (on the main rank) collection summaries re-recorded now that every rank's shards are in."""
    if not ranks.distributed:
        return summary
    counts = reduce_over_ranks({"frames_computed": summary.frames_computed, "frames_skipped": summary.frames_skipped,
                             "shards_written": summary.shards_written})  # returns once every rank is done
    total = PrecomputeSummary(**{k: int(v) for k, v in counts.items()},
                              seconds=reduce_over_ranks({"s": summary.seconds}, op=ReduceOp.MAX)["s"])
    if ranks.is_main:
        for name, col in FeatureStore.open(store_path, mode="r+").collections.items():
            col.record_summary()
            total.collections[name] = col.summary()
    return total
