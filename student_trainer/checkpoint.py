"""Checkpoints: one dict (model, optimizer, scheduler, step, config, provenance), written atomically.

Writing goes through :func:`shared.atomic.atomic_open` (temp file in the same folder, fsync, rename), so a
process killed mid-write leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from shared.atomic import atomic_open, remove_stale_temps
from shared.errors import WeightsUnavailableError

__all__ = ["git_revision", "load_checkpoint", "save_checkpoint"]

_REPO = Path(__file__).resolve().parents[1]


def git_revision() -> str:
    """The repo's git commit (with ``-dirty`` when the tree has changes), or ``unknown`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write ``state`` with torch.save (temp file + fsync + rename).

    Temp files that killed writers of ``path`` left behind are removed first (one writer per run folder).
    """
    p = Path(path)
    remove_stale_temps(p)
    with atomic_open(p, "wb") as fh:
        torch.save(state, fh)
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint on CPU.

    Raises:
        WeightsUnavailableError: missing, truncated or foreign file (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, pickle errors, ...
        raise WeightsUnavailableError(f"cannot read checkpoint {p}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise WeightsUnavailableError(f"{p} is not a checkpoint of this project (no 'model' entry)")
    return state
