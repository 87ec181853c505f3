"""Data for supervision transfer: a deterministic batch schedule, and batches of (student input, target).

Each DataLoader item is one whole training step: the worker reads the modality images and fetches all
of the batch's teacher maps in one batch request, so with ``num_workers`` workers and a prefetch factor
the targets stay several steps ahead of the optimiser. Every worker process owns its own synchronous
client (created lazily after the fork). The schedule is a pure function of (seed, step), so a resumed run
sees exactly the batches and flips an uninterrupted run would. Expected errors in a worker reach the loop as one
line (:mod:`student_trainer.worker_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from shared.distributed import ONE_PROCESS, Ranks
from shared.modalities import Modality
from student_trainer.worker_errors import WorkerFailure, worker_safe

__all__ = ["BatchSchedule", "FlipMode", "TargetSource", "TransferBatches", "flip_target"]

FlipMode = Literal["exact", "mirrored", "none"]


class TargetSource(Protocol):
    def get_many(self, frame_ids: Sequence[str], views: Sequence[str] | None = None) -> np.ndarray: ...


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


def flip_target(target: np.ndarray) -> np.ndarray:
    """Mirror a (C, H, W) teacher map left-right: ``--flip mirrored``'s approximation of the map of the mirrored
    RGB frame (a CNN is not mirror-equivariant; ``--flip exact`` fetches the store's mirror view instead)."""
    return np.ascontiguousarray(target[..., ::-1])


class TransferBatches(Dataset):
    """Item ``k`` = training step ``first_step + k``: inputs (B, 3, H, W) float32, targets (B, C, h, w).

    A flipped sample's input is the modality's exact mirror (the image of the mirrored inputs where one is recorded,
    e.g. the flow image of the mirrored pair), and its target by ``flip``: ``exact`` = the teacher's map of the
    mirrored RGB frame (the store's ``mirror`` view), ``mirrored`` = the cached map flipped, ``none`` = no flips
    (the schedule then draws none). Under torchrun each rank's dataset holds its share ``ranks`` of every step's
    batch (B = batch size / ranks) and fetches only those frames' targets.
    """

    def __init__(
        self,
        frame_ids: Sequence[str],
        image_paths: Sequence[Path],
        modality: Modality,
        schedule: BatchSchedule,
        steps: int,
        first_step: int,
        input_hw: tuple[int, int],
        make_source: Callable[[], TargetSource],
        ranks: Ranks = ONE_PROCESS,
        flip: FlipMode = "mirrored",
        mirrored_paths: Sequence[Path | None] | None = None,
    ) -> None:
        if len(frame_ids) != len(image_paths) or not frame_ids:
            raise ValueError(f"need matching, non-empty frame ids and paths ({len(frame_ids)} vs {len(image_paths)})")
        self.ids, self.paths = list(frame_ids), list(image_paths)
        self.mirrored = list(mirrored_paths) if mirrored_paths is not None else [None] * len(self.ids)
        self.modality, self.schedule, self.hw, self.flip = modality, schedule, input_hw, flip
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

    def _read(self, path: Path) -> np.ndarray:
        img = self.modality.read(path)
        if img.shape[:2] != self.hw:
            img = cv2.resize(img, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        return img

    def load_input(self, i: int, flip: bool) -> torch.Tensor:
        """Frame ``i``'s student input, mirrored when ``flip`` (from the recorded mirrored image if there is one)."""
        if flip and self.mirrored[i] is not None:
            return self.modality.to_tensor(self._read(self.mirrored[i]))  # type: ignore[arg-type]
        img = self._read(self.paths[i])
        return self.modality.to_tensor(self.modality.flip(img) if flip else img)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int] | WorkerFailure:
        return worker_safe(self._item, k)

    def _item(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        step = self.first_step + k
        idx, flips = self.schedule.part(step, self.ranks)
        ids = [self.ids[i] for i in idx]
        x = torch.stack([self.load_input(int(i), bool(f)) for i, f in zip(idx, flips, strict=True)])
        if self.flip == "exact":
            t = self.source().get_many(ids, views=["mirror" if f else "identity" for f in flips])
        else:
            maps = self.source().get_many(ids)
            t = np.stack([flip_target(m) if f else m for m, f in zip(maps, flips, strict=True)])
        return x, torch.from_numpy(np.ascontiguousarray(t)), step
