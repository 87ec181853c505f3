"""The precompute pipeline's last stage: finished shards are encoded and written in a background thread.

The teacher's forward (GPU or CPU) then never waits for the float conversion, the statistics, zstd and the shard
write; on CUDA the device-to-host copy is asynchronous too (pinned memory + an event the writer waits on). At most
``depth`` shards wait in the queue, which bounds host memory and makes the forward wait when the disk is the
bottleneck. An error in the writer (a full disk) stops the run at the next submission, with nothing it did not
finish marked done.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import DataError
from shared.features import FeatureEncoding
from teacher_server.store import Collection, shard_statistics

__all__ = ["HostMaps", "ShardWriter", "to_host"]


@dataclass
class HostMaps:
    """A batch of maps (B, V, C, H, W) on the host, or on its way there (``ready`` is a CUDA event)."""

    tensor: torch.Tensor
    ready: torch.cuda.Event | None = None

    def numpy(self) -> np.ndarray:
        if self.ready is not None:
            self.ready.synchronize()
        return self.tensor.numpy()


def to_host(maps: torch.Tensor) -> HostMaps:
    """Start copying float32 maps to the host: synchronously from the CPU, asynchronously (pinned) from CUDA."""
    maps = maps.float()
    if maps.device.type != "cuda":
        return HostMaps(maps.contiguous())
    host = torch.empty(maps.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(maps, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return HostMaps(host, event)


class ShardWriter:
    """Writes whole shards of one collection in order, in a thread of its own."""

    def __init__(self, col: Collection, encoding: FeatureEncoding, depth: int = 2) -> None:
        self.col, self.encoding = col, encoding
        self.frames_written = self.shards_written = 0
        self._queue: queue.Queue[tuple[int, list[HostMaps]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"shard-writer-{col.name}", daemon=True)
        self._thread.start()

    def submit(self, shard: int, batches: list[HostMaps]) -> None:
        """Queue a shard's maps (its batches in row order); blocks while ``depth`` shards wait; re-raises a
        failure of an earlier write."""
        self._raise_if_failed()
        self._queue.put((shard, batches))

    def close(self) -> None:
        """Wait for every queued shard; re-raises the writer's failure."""
        self._queue.put(None)
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _decoded(self, shard: int, feats: np.ndarray) -> np.ndarray:
        """What clients will decode of the shard's maps (the error statistics compare it with ``feats``).

        Raises:
            DataError: maps the encoding cannot store (non-finite values for a quantised one), naming the frames.
        """
        try:
            return self.encoding.roundtrip(feats)
        except ValueError as e:
            rows, ids = self.col.shard_rows(shard), self.col.ids
            raise DataError(f"shard {shard} of {self.col.name!r} (frames {ids[rows.start]}..{ids[rows.stop - 1]}) "
                            f"cannot be stored in encoding {self.encoding.header()}: {e}") from None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: nothing after a failed write is written
            shard, batches = item
            try:
                feats = np.concatenate([b.numpy() for b in batches])  # (n, V, C, H, W) float32
                stored = feats.astype(np.dtype(self.encoding.dtype))  # what zarr's codecs encode
                stats = shard_statistics(feats[:, 0], self._decoded(shard, feats)[:, 0])
                self.col.write_shard(shard, stored, stats)
                self.frames_written += len(feats)
                self.shards_written += 1
            except BaseException as e:  # re-raised in the main thread
                self._error = e
