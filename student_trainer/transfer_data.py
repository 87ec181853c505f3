"""Data for supervision transfer: a deterministic batch schedule, and batches of (student input, target).

Each DataLoader item is one whole training step: the worker reads the modality images and fetches all
of the batch's teacher maps in one batch request, so with ``num_workers`` workers and a prefetch factor
the targets stay several steps ahead of the optimiser. Every worker process owns its own synchronous
client (created lazily after the fork). The schedule is a pure function of (seed, step), so a resumed run
sees exactly the batches and flips an uninterrupted run would.

An expected error in a worker (an unreachable teacher service, an unreadable image: any ``XModalError``)
travels to the training loop as a :class:`WorkerFailure` item and is raised there as an ``XModalError`` with
its message, one line for the CLI: torch would re-raise it with a "Caught ... in DataLoader worker process 0 /
Original Traceback" text as its message (or as a RuntimeError when its class takes other arguments).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from shared.distributed import ONE_PROCESS, Ranks
from shared.errors import XModalError
from shared.imageio import read_rgb
from shared.presets import ModalityPreset

__all__ = ["BatchSchedule", "TargetSource", "TransferBatches", "WorkerFailure", "flip_target", "unwrap_failure"]


class TargetSource(Protocol):
    def get_many(self, frame_ids: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class BatchSchedule:
    """Batches of ``batch_size`` frame indices from seeded per-epoch permutations, plus per-item flips."""

    n_frames: int
    batch_size: int
    seed: int
    flip: bool = True

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices (B,), flips (B,) bool) of training step ``step`` (0-based)."""
        start = step * self.batch_size
        pos = np.arange(start, start + self.batch_size)
        epochs, offsets = np.divmod(pos, self.n_frames)
        idx = np.empty(self.batch_size, dtype=np.int64)
        for e in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(e)]).permutation(self.n_frames)
            idx[epochs == e] = perm[offsets[epochs == e]]
        flips = np.random.default_rng([self.seed, 7919, step]).random(self.batch_size) < 0.5
        return idx, flips & self.flip

    def part(self, step: int, ranks: Ranks) -> tuple[np.ndarray, np.ndarray]:
        """This rank's contiguous ``batch_size / world_size`` items of :meth:`batch`: together the ranks see
        exactly the one-process batch of ``step``, every position once (``batch_size`` must divide evenly)."""
        if self.batch_size % ranks.world_size:
            raise ValueError(f"batch size {self.batch_size} does not split evenly over {ranks.world_size} ranks")
        idx, flips = self.batch(step)
        per = self.batch_size // ranks.world_size
        mine = slice(ranks.rank * per, (ranks.rank + 1) * per)
        return idx[mine], flips[mine]


@dataclass(frozen=True)
class WorkerFailure:
    """An ``XModalError`` raised in a DataLoader worker, sent to the main process as an item (its message only:
    the error class need not be constructible from one string, as torch's re-raise requires)."""

    message: str


def unwrap_failure(item: Any) -> Any:
    """``item`` itself, or the :class:`WorkerFailure` it is raised as an ``XModalError`` with its message."""
    if isinstance(item, WorkerFailure):
        raise XModalError(item.message)
    return item


def flip_target(target: np.ndarray) -> np.ndarray:
    """Mirror a (C, H, W) teacher map left-right: the map of the mirrored RGB frame, up to border effects."""
    return np.ascontiguousarray(target[..., ::-1])


class TransferBatches(Dataset):
    """Item ``k`` = training step ``first_step + k``: inputs (B, 3, H, W) float32, targets (B, C, h, w).

    Under torchrun each rank's dataset holds its share ``ranks`` of every step's batch (B = batch size / ranks)
    and fetches only those frames' targets.
    """

    def __init__(
        self,
        frame_ids: Sequence[str],
        image_paths: Sequence[Path],
        preset: ModalityPreset,
        schedule: BatchSchedule,
        steps: int,
        first_step: int,
        input_hw: tuple[int, int],
        make_source: Callable[[], TargetSource],
        ranks: Ranks = ONE_PROCESS,
    ) -> None:
        if len(frame_ids) != len(image_paths) or not frame_ids:
            raise ValueError(f"need matching, non-empty frame ids and paths ({len(frame_ids)} vs {len(image_paths)})")
        self.ids, self.paths = list(frame_ids), list(image_paths)
        self.preset, self.schedule, self.hw = preset, schedule, input_hw
        self.steps, self.first_step, self.ranks = steps, first_step, ranks
        self._make_source = make_source
        self._source: TargetSource | None = None
        self._pid = -1

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step)

    def source(self) -> TargetSource:
        if self._source is None or self._pid != os.getpid():  # never share a connection pool across a fork
            self._source, self._pid = self._make_source(), os.getpid()
        return self._source

    def load_input(self, i: int, flip: bool) -> torch.Tensor:
        img = read_rgb(self.paths[i])
        if img.shape[:2] != self.hw:
            img = cv2.resize(img, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        return self.preset.to_tensor(self.preset.flip(img) if flip else img)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int] | WorkerFailure:
        if get_worker_info() is None:  # in the main process: errors propagate as they are
            return self._item(k)
        try:
            return self._item(k)
        except XModalError as e:
            return WorkerFailure(str(e))

    def _item(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        step = self.first_step + k
        idx, flips = self.schedule.part(step, self.ranks)
        targets = self.source().get_many([self.ids[i] for i in idx])
        x = torch.stack([self.load_input(int(i), bool(f)) for i, f in zip(idx, flips, strict=True)])
        t = np.stack([flip_target(m) if f else m for m, f in zip(targets, flips, strict=True)])
        return x, torch.from_numpy(t), step
