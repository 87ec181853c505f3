"""Checks shared by the proposal file readers: the error type and box / frame-id validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import DataError
from shared.ids import is_frame_id

__all__ = ["ProposalFileError", "by_score", "check_boxes", "check_frame_id"]


class ProposalFileError(DataError):
    """A proposal file is unusable; the message names the file and, where known, the frame."""

    def __init__(self, path: str | os.PathLike[str], message: str, frame: str | None = None) -> None:
        where = f"{path}: frame {frame!r}:" if frame is not None else f"{path}:"
        super().__init__(f"{where} {message}")
        self.path, self.frame = str(path), frame


def check_boxes(path: Path, frame: str | None, value: Any, columns: tuple[int, ...] = (4,)) -> np.ndarray:
    """A numeric (K, c) array with c in ``columns``, finite, as float64 (K may be 0)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros((0, columns[0]), np.float64)
    if arr.dtype.kind not in "biuf":
        raise ProposalFileError(path, f"boxes must be numbers, got dtype {arr.dtype}", frame)
    if arr.ndim != 2 or arr.shape[1] not in columns:
        shapes = " or ".join(f"(K, {c})" for c in columns)
        raise ProposalFileError(path, f"boxes must have shape {shapes}, got {arr.shape}", frame)
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ProposalFileError(path, f"row {int(np.flatnonzero(bad)[0])} is not finite: {arr[bad][0].tolist()}", frame)
    return arr


def check_frame_id(path: Path, name: str, where: str) -> str:
    """``name`` if it is a valid frame id; else an error saying ``where`` it came from."""
    if not is_frame_id(name):
        raise ProposalFileError(path, f"{where} {name!r} is not a valid frame id ([A-Za-z0-9][A-Za-z0-9._:-]{{0,127}})")
    return name


def by_score(boxes: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 boxes (and scores) in descending score order; ties keep the file's order."""
    if scores is None:
        return boxes.astype(np.float32), None
    order = np.argsort(-scores, kind="stable")
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)
