"""Proposal files: our ``.npz`` layout (read and written) and the MATLAB layouts of MCG / selective search (read).

Boxes come out as ``{frame id: (N, 4) float32}`` in the project's convention (:mod:`shared.boxes`):
``[x1, y1, x2, y2]`` pixel edges, x2/y2 exclusive, best proposal first. Geometry is not policed beyond
finiteness: a proposal may reach outside the image or be empty, and consumers clip and drop those
(:func:`student_trainer.detect_data.detect_frames` does). Structure is: every error names the file and,
where there is one, the frame.

``.npz`` layouts (``np.load`` with ``allow_pickle=False``: object arrays are refused):

* **ragged** (what :func:`save_proposals` writes)::

      ids     (F,)      str      frame ids
      counts  (F,)      int      proposals per frame
      boxes   (N, 4)    float    all frames' boxes, concatenated in ``ids`` order, N = counts.sum()
      scores  (N,)      float    optional, higher = better
      meta    ()        str      optional JSON (who made the file: method, parameters, completeness)

* **per frame**: one array per frame id key, ``(K, 4)`` boxes or ``(K, 5)`` boxes + score column; an
  optional ``meta`` key as above. A file with ``ids`` + ``boxes`` keys is read as ragged.

Where scores are given, each frame's boxes are put in descending score order (a stable sort: boxes
already in rank order keep it), so cutting the first K keeps the K best.

MATLAB layouts (MCG, selective search; Gupta et al.'s NYUD2 files): see :mod:`.matlab`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import atomic_open
from student_trainer.proposals._checks import ProposalFileError, by_score, check_boxes, check_frame_id
from student_trainer.proposals.matlab import read_mat

__all__ = [
    "ProposalFileError",
    "load_proposals",
    "read_proposal_file",
    "save_proposals",
]

_RAGGED_KEYS = ("ids", "counts", "boxes", "scores", "meta")


# ---------------------------------------------------------------- npz


def save_proposals(
    path: str | os.PathLike[str],
    boxes: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray] | None = None,
    meta: Mapping[str, Any] | None = None,
    compress: bool = True,
) -> Path:
    """Write proposals in the ragged ``.npz`` layout, atomically (temp file, then rename).

    Args:
        path: destination, conventionally ``*.npz``; parent folders are created.
        boxes: ``{frame id: (K, 4) boxes}``, best first, pixels ``[x1, y1, x2, y2]`` (x2/y2 exclusive).
        scores: optional ``{frame id: (K,) scores}`` with the same frames; higher = better.
        meta: optional JSON-serialisable description, stored as the ``meta`` string.
        compress: zip-deflate the arrays (``np.savez_compressed``: ~3.5x smaller for generated proposals,
            ~4 ms per frame to write); False writes them stored, for frequent checkpoints.

    Returns:
        The path written.

    Raises:
        ProposalFileError: an invalid frame id, a box array not (K, 4) or not finite, or scores that do not
            match the boxes (naming the frame).
    """
    p = Path(path)
    ids = list(boxes)
    arrays = [check_boxes(p, check_frame_id(p, fid, "frame id"), boxes[fid]) for fid in ids]
    out: dict[str, np.ndarray] = {
        "ids": np.array(ids, dtype=f"<U{max([len(i) for i in ids], default=1)}"),
        "counts": np.array([len(a) for a in arrays], np.int64),
        "boxes": np.concatenate([*arrays, np.zeros((0, 4))]).astype(np.float32),
    }
    if scores is not None:
        missing = [fid for fid in ids if fid not in scores]
        if missing or len(scores) != len(ids):
            extra = sorted(set(scores) - set(ids))
            raise ProposalFileError(p, f"scores must cover the same frames as boxes: missing {missing[:3]}, "
                                       f"extra {extra[:3]}")
        flat = []
        for fid, a in zip(ids, arrays, strict=True):
            s = np.asarray(scores[fid], np.float64).reshape(-1)
            if len(s) != len(a) or not np.isfinite(s).all():
                raise ProposalFileError(p, f"expected {len(a)} finite scores, got {s.shape[0]}"
                                           f"{'' if np.isfinite(s).all() else ' with NaN/inf'}", fid)
            flat.append(s)
        out["scores"] = np.concatenate([*flat, np.zeros(0)]).astype(np.float32)
    if meta is not None:
        out["meta"] = np.array(json.dumps(dict(meta), sort_keys=True))
    with atomic_open(p, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **out)
    return p


def _read_npz(p: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], dict[str, Any]]:
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ProposalFileError(p, f"not a readable .npz file ({e})") from None
    with z:
        try:
            data = {k: z[k] for k in z.files}
        except ValueError as e:  # object arrays need pickle, which we refuse
            raise ProposalFileError(p, f"holds an array that needs pickle ({e}); store plain numeric arrays") from None
    meta: dict[str, Any] = {}
    if "meta" in data:
        try:
            meta = json.loads(str(data.pop("meta")))
        except json.JSONDecodeError as e:
            raise ProposalFileError(p, f"'meta' is not JSON ({e.msg})") from None
    if "ids" in data and "boxes" in data:
        return _read_ragged(p, data), meta
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for key, value in data.items():
        fid = check_frame_id(p, key, "key")
        arr = check_boxes(p, fid, value, columns=(4, 5))
        out[fid] = by_score(arr[:, :4], arr[:, 4] if arr.shape[1] == 5 else None)
    return out, meta


def _read_ragged(p: Path, data: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    unknown = sorted(set(data) - set(_RAGGED_KEYS))
    if unknown:
        raise ProposalFileError(p, f"unexpected keys {unknown} in a ragged file (expected {list(_RAGGED_KEYS)})")
    if "counts" not in data:
        raise ProposalFileError(p, "a ragged file (with 'ids' and 'boxes') needs 'counts', proposals per frame")
    ids, counts = data["ids"], data["counts"]
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        raise ProposalFileError(p, f"'ids' must be a 1-D string array, got {ids.dtype} of shape {ids.shape}")
    if counts.shape != ids.shape or counts.dtype.kind not in "iu" or (counts < 0).any():
        raise ProposalFileError(p, f"'counts' must be {ids.shape[0]} non-negative integers (one per id), "
                                   f"got {counts.dtype} of shape {counts.shape}")
    boxes = np.asarray(data["boxes"])
    if boxes.dtype.kind not in "biuf" or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ProposalFileError(p, f"'boxes' must be a numeric (N, 4) array, got {boxes.dtype} of shape {boxes.shape}")
    total = int(counts.sum())
    if len(boxes) != total:
        raise ProposalFileError(p, f"'boxes' has {len(boxes)} rows but 'counts' adds up to {total}")
    scores = data.get("scores")
    if scores is not None:
        scores = np.asarray(scores, np.float64)
        if scores.shape != (total,) or not np.isfinite(scores).all():
            raise ProposalFileError(p, f"'scores' must be {total} finite numbers, got shape {scores.shape}")
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    start = 0
    for raw, n in zip(ids.tolist(), counts.tolist(), strict=True):
        fid = check_frame_id(p, str(raw), "id")
        if fid in out:
            raise ProposalFileError(p, "appears twice in 'ids'", fid)
        stop = start + n
        out[fid] = by_score(check_boxes(p, fid, boxes[start:stop]), None if scores is None else scores[start:stop])
        start = stop
    return out


# ---------------------------------------------------------------- entry points


def read_proposal_file(
    path: str | os.PathLike[str], id_prefix: str = ""
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], dict[str, Any]]:
    """Boxes and scores of every frame, plus the file's ``meta`` (``{}`` for MATLAB files or without one).

    Args:
        path: an ``.npz`` file, a ``.mat`` file, or a folder of per-image ``.mat`` files.
        id_prefix: prepended to MATLAB image names to make frame ids (ignored for ``.npz``).

    Returns:
        ``({frame id: (boxes (K, 4) float32, scores (K,) float32 or None)}, meta)``, boxes best first.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ProposalFileError: unreadable file, wrong layout, bad values (naming the file and frame).
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.mat"))
        if not files:
            raise ProposalFileError(p, "folder holds no .mat files (expected one MCG file per image)")
        out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for f in files:
            for fid, v in read_mat(f, id_prefix).items():
                if fid in out:
                    raise ProposalFileError(f, "is given by two files of the folder", fid)
                out[fid] = v
        return out, {}
    if not p.is_file():
        raise FileNotFoundError(f"proposal file {p} does not exist")
    if p.suffix.lower() == ".mat":
        return read_mat(p, id_prefix), {}
    return _read_npz(p)


def load_proposals(path: str | os.PathLike[str], id_prefix: str = "") -> dict[str, np.ndarray]:
    """Proposal boxes per frame from any supported file (see the module docstring for the layouts).

    Args:
        path: ``.npz`` (ours, either layout), an MCG / selective-search ``.mat`` file, or a folder of
            per-image MCG ``.mat`` files.
        id_prefix: prepended to MATLAB image names to make frame ids, e.g. ``"nyud2."``.

    Returns:
        ``{frame id: (K, 4) float32}`` boxes ``[x1, y1, x2, y2]`` in pixels (x2/y2 exclusive), best first.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ProposalFileError: (a :class:`~shared.errors.DataError`) naming the file and frame.
    """
    return {fid: boxes for fid, (boxes, _) in read_proposal_file(path, id_prefix)[0].items()}
