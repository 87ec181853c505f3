"""Import JHMDB (Jhuang, Gall, Zuffi, Schmid, Black, ICCV 2013) for action detection on flow images.

Inputs under ``root`` (the archives ``Rename_Images.tar.gz``, ``puppet_mask.zip``, ``splits.zip``):

* ``Rename_Images/<class>/<video>/%05d.png``: the frames from ``00001.png``;
* ``puppet_mask/<class>/<video>/puppet_mask.mat``: MATLAB v5, ``part_mask`` H x W x T, frame j (1-based)
  is ``part_mask[:, :, j - 1]``, the person is ``> 0``. A video with fewer masks than frames reuses the
  last mask for the rest, as pengxj/action-faster-rcnn does;
* ``splits/<class>_test_split<k>.txt``: lines ``<video>.avi <id>``, id 1 = train, 2 = test (0, HMDB's
  "not in this split", is skipped).

The 21 classes (:data:`JHMDB_CLASSES`) are in Gkioxari and Malik's order (ActionTubes ``train_jhmdb.m``).

Per video: every frame t that has a successor t+1 becomes one record with the flow image of (t, t+1) and
one box, the tight box of ``part_mask > 0`` of frame t (pixel edges, x2/y2 exclusive; no box when the mask
is empty) labelled with the video's action. The last frame has no successor and no flow image, so it is
not imported (ActionTubes' feature caching likewise skips frames whose flow image does not exist).

Outputs under ``out_dir``: ``flow/<class>/<video>/<t:05d>.png`` (shared by the three splits: import every
split into one folder and each flow image is computed once), ``manifest_split<k>.jsonl`` (frame ids
``jhmdb.<class>.<video>.<t:05d>`` with the video name reduced to the id alphabet, splits ``flow_train`` /
``flow_test`` (the detector's flow defaults), ``rgb`` / ``rgb_next`` = absolute paths of the frames under
``root``, which is therefore not to be moved) and ``import.json`` (stamp: the flow method).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from shared.errors import ConfigError, DataError
from shared.imageio import read_rgb
from shared.manifest import FrameRecord, ManifestHeader, ObjectBox, write_manifest
from xmodal_data.flow import FLOW_METHODS
from xmodal_data.importers.parallel import run_jobs
from xmodal_data.importers.stamp import check_stamp
from xmodal_data.importers.video import pair_paths, sanitise_stem, write_pair

__all__ = [
    "DATASET",
    "JHMDB_CLASSES",
    "SPLIT_NAMES",
    "VideoJob",
    "import_jhmdb",
    "list_video_frames",
    "manifest_name",
    "mask_box",
    "process_video",
    "read_part_mask",
    "read_split_file",
]

log = logging.getLogger(__name__)

DATASET = "jhmdb"
JHMDB_CLASSES: tuple[str, ...] = (
    "brush_hair", "catch", "clap", "climb_stairs", "golf", "jump", "kick_ball", "pick", "pour", "pullup", "push",
    "run", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "stand", "swing_baseball", "throw", "walk", "wave",
)
SPLIT_NAMES = {1: "flow_train", 2: "flow_test"}
"""Split file id -> manifest split."""

_FRAME = re.compile(r"^(\d{5})\.png$")
_MAX_ID = 128


def manifest_name(split: int) -> str:
    """``manifest_split<k>.jsonl``."""
    return f"manifest_split{split}.jsonl"


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """``[(video, id)]`` of a ``<class>_test_split<k>.txt`` (ids 1 train, 2 test; 0 lines are dropped).

    Raises:
        FileNotFoundError: no such file.
        DataError: a line that is not ``<video>.avi <0|1|2>`` or a repeated video (names the file and line).
    """
    if not path.is_file():
        raise FileNotFoundError(f"JHMDB split file {path} does not exist")
    videos, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 2 or not cells[0].endswith(".avi") or cells[1] not in ("0", "1", "2"):
            raise DataError(f"{path}:{lineno}: expected '<video>.avi <1 train | 2 test>', got {line.strip()!r}")
        video = cells[0][: -len(".avi")]
        if video in seen:
            raise DataError(f"{path}:{lineno}: video {video!r} is listed twice")
        seen.add(video)
        if cells[1] != "0":
            videos.append((video, int(cells[1])))
    return videos


def list_video_frames(folder: Path) -> list[Path]:
    """The frames ``00001.png .. N.png`` of a video folder, in order.

    Raises:
        DataError: no such folder, no frame, or a gap in the numbering (names the first missing file).
    """
    if not folder.is_dir():
        raise DataError(f"JHMDB frame folder {folder} does not exist (expected Rename_Images/<class>/<video>/)")
    numbers = sorted(int(m[1]) for p in folder.iterdir() if (m := _FRAME.match(p.name)))
    if not numbers:
        raise DataError(f"JHMDB frame folder {folder} holds no %05d.png frames")
    expected = list(range(1, len(numbers) + 1))
    if numbers != expected:
        gap = next(e for e, n in zip(expected, numbers, strict=True) if e != n)
        raise DataError(f"JHMDB frame folder {folder}: frame {folder / f'{gap:05d}.png'} is missing "
                        f"(frames must run from 00001.png without gaps)")
    return [folder / f"{n:05d}.png" for n in numbers]


def read_part_mask(path: Path, height: int, width: int) -> np.ndarray:
    """Read ``part_mask`` of a ``puppet_mask.mat`` as (H, W, T) bool person masks.

    Raises:
        FileNotFoundError: no such file.
        DataError: unreadable, no ``part_mask``, or a size other than the frames' (names the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"JHMDB puppet mask {path} does not exist")
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise DataError(f"{path} is not a readable MATLAB v5 .mat file: {e}") from None
    if "part_mask" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has no variable 'part_mask' (found {found}); expected JHMDB's H x W x T mask")
    mask = np.asarray(mat["part_mask"])
    if mask.ndim == 2:  # MATLAB drops a trailing singleton: one mask frame
        mask = mask[:, :, None]
    if mask.ndim != 3 or mask.shape[:2] != (height, width) or mask.shape[2] == 0:
        hint = " (transposed?)" if mask.ndim == 3 and mask.shape[:2] == (width, height) else ""
        raise DataError(
            f"{path}: part_mask is {'x'.join(map(str, mask.shape))} but the frames are {height}x{width}: expected "
            f"{height}x{width}xT{hint}"
        )
    return mask > 0


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box ``(x1, y1, x2, y2)`` of a (H, W) bool mask, pixel edges with x2/y2 exclusive; None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


@dataclass(frozen=True)
class VideoJob:
    """One video of the split: its files, its split and id part, the output folder and flow method."""

    action: str
    video: str
    frames_dir: str
    mask_path: str
    split: str
    id_stem: str
    out_dir: str
    flow_method: str


def process_video(job: VideoJob) -> list[FrameRecord]:
    """Boxes of every frame with a successor and their flow images (those not written yet).

    Raises:
        DataError / FileNotFoundError: a bad or missing frame or mask (named); nothing of the video is written
            before its mask is checked.
    """
    frames = list_video_frames(Path(job.frames_dir))
    first = read_rgb(frames[0])
    height, width = first.shape[:2]
    mask = read_part_mask(Path(job.mask_path), height, width)
    if mask.shape[2] < len(frames):
        log.info("%s: %d masks for %d frames; the last mask is reused", job.mask_path, mask.shape[2], len(frames))
    cache: dict[int, np.ndarray] = {0: first}

    def frame(i: int) -> np.ndarray:
        if i not in cache:
            rgb = read_rgb(frames[i])
            if rgb.shape != first.shape:
                raise DataError(f"frame {frames[i]} is {rgb.shape[0]}x{rgb.shape[1]} but {frames[0]} is "
                                f"{height}x{width}")
            cache.clear()  # pairs are visited in order: only frame i is needed again
            cache[i] = rgb
        return cache[i]

    out, records = Path(job.out_dir), []
    clip = f"{job.action}/{job.video}"
    for i in range(len(frames) - 1):
        t = i + 1  # 1-based frame number, as the file names
        rel = pair_paths(clip, t, kinds=("flow", "flow_mirror"), digits=5)
        write_pair(out, rel, lambda i=i: (frame(i), frame(i + 1)), flow_method=job.flow_method)
        box = mask_box(mask[:, :, min(i, mask.shape[2] - 1)])
        records.append(FrameRecord(
            id=f"{DATASET}.{job.action}.{job.id_stem}.{t:05d}", split=job.split, rgb=str(frames[i]),
            rgb_next=str(frames[i + 1]), flow=rel["flow"], flow_mirror=rel["flow_mirror"],
            objects=[] if box is None else [ObjectBox(label=job.action, box=box)],
        ))
    if not records:
        raise DataError(f"JHMDB video {job.frames_dir} has 1 frame; a flow pair needs 2")
    return records


def _jobs(root: Path, split: int, out_dir: Path, flow_method: str) -> list[VideoJob]:
    jobs = []
    for action in JHMDB_CLASSES:
        stems: dict[str, str] = {}
        room = _MAX_ID - len(f"{DATASET}.{action}..00000")
        for video, split_id in read_split_file(root / "splits" / f"{action}_test_split{split}.txt"):
            stem = sanitise_stem(video)[:room]
            if stem in stems:
                raise DataError(f"JHMDB videos {stems[stem]!r} and {video!r} ({action}) give the same frame id part "
                                f"{stem!r}")
            stems[stem] = video
            jobs.append(VideoJob(
                action, video, str(root / "Rename_Images" / action / video),
                str(root / "puppet_mask" / action / video / "puppet_mask.mat"), SPLIT_NAMES[split_id], stem,
                str(out_dir), flow_method,
            ))
    return jobs


def import_jhmdb(
    root: str | os.PathLike[str],
    split: int,
    out_dir: str | os.PathLike[str],
    flow_method: str = "dis",
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Import one JHMDB split: per-frame person boxes labelled with the action, flow images, a manifest.

    Args:
        root: the JHMDB folder (``Rename_Images/``, ``puppet_mask/``, ``splits/``).
        split: 1, 2 or 3.
        out_dir: output folder (module docstring); one folder can take all three splits.
        flow_method: ``dis`` or ``farneback``.
        workers: processes (default: all usable CPUs).
        progress: show a progress bar.

    Returns:
        The manifest path, ``out_dir/manifest_split<k>.jsonl``.

    Raises:
        FileNotFoundError: no root, a missing split file or puppet mask (named).
        DataError: a malformed split file, a missing or gapped frame folder, a mask of another size than
            the frames (each named); no manifest is written.
        ConfigError: bad settings, or ``out_dir`` made with another flow method.
    """
    if split not in (1, 2, 3):
        raise ConfigError(f"JHMDB has splits 1, 2 and 3, got {split}")
    if flow_method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {flow_method!r}: expected one of {', '.join(FLOW_METHODS)}")
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"JHMDB root {root} does not exist (expected Rename_Images/, puppet_mask/, splits/)")
    jobs = _jobs(root.resolve(), split, out_dir, flow_method)
    if not jobs:
        raise DataError(f"the split files of split {split} under {root / 'splits'} list no train or test video")
    check_stamp(out_dir, DATASET, {"flow_method": flow_method})
    results = run_jobs(process_video, jobs, workers, desc=f"{DATASET} split {split}", unit="video", progress=progress)
    records = [r for video_records in results for r in video_records]  # type: ignore[union-attr]
    counts = {name: sum(1 for j in jobs if j.split == name) for name in SPLIT_NAMES.values()}
    header = ManifestHeader(
        dataset=DATASET,
        classes=list(JHMDB_CLASSES),
        description=f"JHMDB split {split} ({counts['flow_train']} train / {counts['flow_test']} test videos): "
        f"person boxes from puppet masks labelled with the action, {flow_method} flow images of (t, t+1)",
    )
    return write_manifest(out_dir / manifest_name(split), header, records)
