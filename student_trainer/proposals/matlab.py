"""Proposals in the MATLAB layouts of MCG and selective search (Gupta et al.'s NYUD2 files), read with scipy.

MATLAB layouts (1-based, inclusive pixel indices ``[y1 x1 y2 x2]``, i.e. ``[row col row col]``, which
becomes ``[x1 - 1, y1 - 1, x2, y2]`` here), verified against Gupta et al.'s public code:

* **one file for a dataset**: a cell array of per-image ``(K, 4)`` box arrays under ``bboxes`` (MCG, Gupta's
  Fast R-CNN ``data/nyud2_mcg_boxes.mat``) or ``boxes`` (Fast R-CNN's selective search files), image names
  under ``imnames`` or ``images``, optionally per-image ``scores``. Fast R-CNN's loader
  (s-gupta/fast-rcnn ``datasets/nyud2_voc.py``) reads it as ``bboxes[i][:, (1, 0, 3, 2)] - 1`` into
  0-based inclusive ``[x1 y1 x2 y2]``.
* **one file per image** ``<image name>.mat``, alone or in a folder: MCG's ``candidates`` struct
  (``bboxes``, ``scores``; rcnn-depth ``compute_mcg_cands.m`` reorders MCG's ``[x1 y1 x2 y2]`` to
  ``[y1 x1 y2 x2]`` "to be coherent with ... sel_search") or top-level ``bboxes`` (rcnn-depth's region
  files, read by ``roidb_from_nyud2_region.m`` with the same ``[2 1 4 3]`` reorder).

MATLAB names become frame ids as ``id_prefix + name`` (NYUD2: ``id_prefix="nyud2."`` gives
``nyud2.img_5001``). MATLAB v7.3 (HDF5) files are not read: re-save them with ``save(..., '-v7')``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from student_trainer.proposals._checks import ProposalFileError, by_score, check_boxes, check_frame_id

__all__ = ["read_mat"]

_MAT_BOX_KEYS = ("bboxes", "boxes")
_MAT_NAME_KEYS = ("imnames", "images")


def _loadmat(p: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(p, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:
        raise ProposalFileError(p, "is a MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')") from None
    except (ValueError, OSError, TypeError) as e:
        raise ProposalFileError(p, f"not a readable MATLAB .mat file ({e})") from None


def _cells(value: Any) -> list[Any]:
    """The entries of a MATLAB cell array (any orientation), or of a 1-row char matrix of names."""
    arr = np.asarray(value)
    if arr.dtype == object:
        return list(arr.ravel(order="F"))
    if arr.dtype.kind == "U":  # a char matrix: one name per row (scipy gives one string per row)
        return [str(row) for row in arr.ravel()]
    return [arr]


def _mat_name(p: Path, value: Any, index: int) -> str:
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return "".join(arr.ravel().tolist()).strip()
    if arr.dtype == object and arr.size == 1:
        return _mat_name(p, arr.ravel()[0], index)
    raise ProposalFileError(p, f"image name {index + 1} is not a string (dtype {arr.dtype})")


def _from_matlab(p: Path, fid: str, value: Any, scores: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """MATLAB 1-based inclusive [y1 x1 y2 x2] -> our [x1, y1, x2, y2] (x2/y2 exclusive)."""
    yx = check_boxes(p, fid, value)
    if len(yx) and yx.min() < 1:
        raise ProposalFileError(p, f"box values go down to {yx.min():g}, but MATLAB boxes are 1-based ([y1 x1 y2 x2] "
                                   ">= 1); is this file 0-based or in another layout?", fid)
    if ((yx[:, 2] < yx[:, 0]) | (yx[:, 3] < yx[:, 1])).any():
        row = int(np.flatnonzero((yx[:, 2] < yx[:, 0]) | (yx[:, 3] < yx[:, 1]))[0])
        raise ProposalFileError(p, f"row {row} {yx[row].tolist()} has y2 < y1 or x2 < x1 as [y1 x1 y2 x2]", fid)
    boxes = np.stack([yx[:, 1] - 1, yx[:, 0] - 1, yx[:, 3], yx[:, 2]], axis=1)
    s = None
    if scores is not None and np.asarray(scores).size:
        s = np.asarray(scores, np.float64).reshape(-1)
        if len(s) != len(boxes) or not np.isfinite(s).all():
            raise ProposalFileError(p, f"expected {len(boxes)} finite scores, got {len(s)}", fid)
    return by_score(boxes, s)


def _field(struct: Any, name: str) -> Any:
    return struct[name][0, 0] if name in (struct.dtype.names or ()) else None


def read_mat(p: Path, id_prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    data = {k: v for k, v in _loadmat(p).items() if not k.startswith("__")}
    box_key = next((k for k in _MAT_BOX_KEYS if k in data), None)
    name_key = next((k for k in _MAT_NAME_KEYS if k in data), None)
    if box_key is not None and name_key is not None:  # one file for a dataset
        cells, names = _cells(data[box_key]), _cells(data[name_key])
        score_cells = _cells(data["scores"]) if "scores" in data else None
        if len(cells) != len(names) or (score_cells is not None and len(score_cells) != len(cells)):
            counts = f"{len(cells)} {box_key!r}, {len(names)} {name_key!r}"
            counts += f", {len(score_cells)} 'scores'" if score_cells is not None else ""
            raise ProposalFileError(p, f"expected one entry per image in each cell array, got {counts}")
        out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for i, (cell, raw) in enumerate(zip(cells, names, strict=True)):
            fid = check_frame_id(p, id_prefix + _mat_name(p, raw, i), f"image {i + 1}'s frame id")
            if fid in out:
                raise ProposalFileError(p, f"image name appears twice in {name_key!r}", fid)
            out[fid] = _from_matlab(p, fid, cell, None if score_cells is None else score_cells[i])
        return out
    # one file for one image, named by its stem
    fid = check_frame_id(p, id_prefix + p.stem, "file name's frame id")
    if "candidates" in data:
        cand = data["candidates"]
        if cand.dtype.names is None or "bboxes" not in cand.dtype.names:
            raise ProposalFileError(p, f"'candidates' has no 'bboxes' field (fields: {cand.dtype.names})", fid)
        return {fid: _from_matlab(p, fid, _field(cand, "bboxes"), _field(cand, "scores"))}
    if "bboxes" in data:
        return {fid: _from_matlab(p, fid, data["bboxes"], data.get("scores"))}
    raise ProposalFileError(p, f"no proposals found: expected 'bboxes'/'boxes' with 'imnames'/'images' (one file "
                               f"for a dataset), or 'candidates.bboxes' / 'bboxes' (one image); got {sorted(data)}")


