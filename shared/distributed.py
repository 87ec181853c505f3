"""Running as one of several ``torchrun`` ranks: who we are, the process group, and the few collectives we need.

``torchrun --nproc-per-node N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
in the environment; without them (a plain start) the process is rank 0 of 1 and nothing here talks to anyone.
On CUDA the group is ``cpu:gloo,cuda:nccl``: gradients go through NCCL, small CPU-side reductions (counters,
metrics) through gloo, so callers never move bookkeeping onto the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from shared.device import select_device
from shared.errors import ConfigError

__all__ = [
    "ONE_PROCESS", "Ranks", "mean_over_ranks", "process_group", "rank_device", "ranks_from_env", "reduce_over_ranks",
]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks: global ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes shared outputs (checkpoints, metrics, summaries) and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


ONE_PROCESS = Ranks()
"""A plain start: rank 0 of 1."""


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {text!r}") from None


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """The ranks torchrun describes in ``env`` (default ``os.environ``); rank 0 of 1 when it describes none.

    Raises:
        ConfigError: non-integer values or ``RANK`` outside ``[0, WORLD_SIZE)``.
    """
    env = os.environ if env is None else env
    ranks = Ranks(_env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0))
    if not (ranks.world_size >= 1 and 0 <= ranks.rank < ranks.world_size and ranks.local_rank >= 0):
        raise ConfigError(f"torchrun environment: need 0 <= RANK < WORLD_SIZE, got RANK={ranks.rank} "
                          f"WORLD_SIZE={ranks.world_size} LOCAL_RANK={ranks.local_rank}")
    return ranks


def rank_device(name: str, ranks: Ranks) -> torch.device:
    """The device of this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` (one GPU per rank on a node)."""
    device = select_device(name)
    if device.type == "cuda" and (name in ("auto", "cuda")):
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {ranks.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                              "start at most that many ranks per node (--nproc-per-node)")
        device = torch.device("cuda", ranks.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(device: torch.device, ranks: Ranks | None = None) -> Iterator[Ranks]:
    """Join the ranks' process group for the block (nothing to join for a single process), then leave it."""
    ranks = ranks or ranks_from_env()
    if not ranks.distributed:
        yield ranks
        return
    if device.type == "cuda":
        dist.init_process_group("cpu:gloo,cuda:nccl", rank=ranks.rank, world_size=ranks.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def reduce_over_ranks(values: Mapping[str, float], op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> dict[str, float]:
    """``values`` reduced (summed by default) key by key over all ranks; every rank calls with the same keys."""
    if not dist.is_initialized():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=op)
    return dict(zip(keys, t.tolist(), strict=True))


def mean_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """The average over ranks of each value (rank-local metrics into one record)."""
    n = dist.get_world_size() if dist.is_initialized() else 1
    return {k: v / n for k, v in reduce_over_ranks(values).items()}
