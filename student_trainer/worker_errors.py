"""Expected errors raised in DataLoader workers, delivered to the training loop as one line.

An expected error in a worker (an unreachable teacher service, an unreadable image: any ``XModalError``) travels to
the training loop as a :class:`WorkerFailure` item and is raised there as an ``XModalError`` with its message, one
line for the CLI: torch would re-raise it with a "Caught ... in DataLoader worker process 0 / Original Traceback"
text as its message (or as a RuntimeError when its class takes other arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch.utils.data import get_worker_info

from shared.errors import XModalError

__all__ = ["WorkerFailure", "unwrap_failure", "worker_safe"]

T = TypeVar("T")


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


def worker_safe(fn: Callable[[int], T], k: int) -> T | WorkerFailure:
    """``fn(k)`` as a dataset's ``__getitem__``: in a worker process an ``XModalError`` becomes a
    :class:`WorkerFailure` item; in the main process errors propagate as they are."""
    if get_worker_info() is None:
        return fn(k)
    try:
        return fn(k)
    except XModalError as e:
        return WorkerFailure(str(e))
