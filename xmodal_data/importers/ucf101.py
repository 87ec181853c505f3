"""Import UCF101 videos listed in a split file as frame pairs with flow images, for flow supervision transfer.

The paper's flow transfer data: 5 frames from each of the ~9.5K training videos of UCF101's split 1, each
with the flow image of (t, t+1).

Inputs (Soomro, Zamir, Shah, arXiv:1212.0402): ``UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.avi`` and a list
such as ``ucfTrainTestlist/trainlist01.txt``: one ``<Class>/<file>.avi [<class index>]`` per line, CRLF.
The class is the folder (``HandstandPushups/v_HandStandPushups_g08_c01.avi``: the file name's spelling
differs). If ``classInd.txt`` (``<index> <Class>``) lies beside the list, every line's index must name its
folder's class. ``root`` is the folder holding the class folders, or the one holding ``UCF-101/``.

Per video: its frame count, fps and size come from the file; ``frames_per_video`` = F pairs start at
``t_k = floor((k + 1/2) (n - 1) / F)``, k = 0..F-1, the centres of F equal parts of the n - 1 frames that
have a successor (all n - 1 when fewer). Frames are decoded sequentially up to the last one needed. The
pair's frames are saved as PNG and its flow computed (:func:`xmodal_data.importers.video.write_pair`).

Outputs under ``out_dir``: ``rgb/<Class>/<video>/<t:06d>.png`` (frame t), ``rgb_next/...`` (t+1),
``flow/...``, ``videos/<Class>/<video>.json`` (the video's "done" marker: frames, fps, size, pair starts;
written last), ``manifest.jsonl`` (frame ids ``ucf101.<video>.<t:06d>``, one split, unlabelled),
``bad_videos.txt`` (with ``skip_bad``) and ``import.json`` (stamp: pairs per video, flow method).

A video that cannot be decoded (OpenCV cannot open it, or a needed frame does not decode) fails the import
naming the file; nothing of it is marked done, the other videos' markers stay, and a rerun resumes. With
``skip_bad`` such videos are skipped instead, each logged as a warning, listed in ``bad_videos.txt`` and
counted at the end.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError, DataError
from shared.manifest import FrameRecord, ManifestHeader, write_manifest
from xmodal_data.flow import FLOW_METHODS
from xmodal_data.importers.parallel import run_jobs
from xmodal_data.importers.stamp import check_stamp
from xmodal_data.importers.video import decode_frames, open_video, pair_paths, sanitise_stem, write_pair

__all__ = [
    "DATASET",
    "MANIFEST_NAME",
    "ListedVideo",
    "VideoJob",
    "evenly_spaced_starts",
    "import_ucf101",
    "process_video",
    "read_video_list",
]

log = logging.getLogger(__name__)

DATASET = "ucf101"
MANIFEST_NAME = "manifest.jsonl"
CLASS_INDEX = "classInd.txt"


@dataclass(frozen=True)
class ListedVideo:
    """One line of a split list: the path as listed (``<Class>/<file>.avi``), its class, the 1-based line."""

    path: str
    label: str
    line: int


def _class_index(folder: Path) -> dict[int, str] | None:
    path = folder / CLASS_INDEX
    if not path.is_file():
        return None
    index = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        if len(cells) != 2 or not cells[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected '<index> <Class>', got {line!r}")
        index[int(cells[0])] = cells[1]
    return index


def read_video_list(path: str | os.PathLike[str]) -> list[ListedVideo]:
    """Read a UCF101 split list (``trainlist0k.txt`` / ``testlist0k.txt``; LF or CRLF).

    Raises:
        FileNotFoundError: no such file.
        DataError: a malformed line, a repeated video, or a class index that ``classInd.txt`` beside the
            list gives to another class (names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video list {p} does not exist (expected e.g. ucfTrainTestlist/trainlist01.txt)")
    classes = _class_index(p.parent)
    videos: list[ListedVideo] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        parts = cells[0].split("/")
        if len(cells) > 2 or len(parts) != 2 or not all(parts) or (len(cells) == 2 and not cells[1].isdigit()):
            raise DataError(f"{p}:{lineno}: expected '<Class>/<file>.avi [<class index>]', got {line.strip()!r}")
        if cells[0] in seen:
            raise DataError(f"{p}:{lineno}: {cells[0]} is listed again (first on line {seen[cells[0]]})")
        if classes is not None and len(cells) == 2 and classes.get(int(cells[1])) != parts[0]:
            raise DataError(
                f"{p}:{lineno}: class index {cells[1]} is {classes.get(int(cells[1]))!r} in "
                f"{p.parent / CLASS_INDEX} but the video's folder is {parts[0]!r}"
            )
        seen[cells[0]] = lineno
        videos.append(ListedVideo(cells[0], parts[0], lineno))
    if not videos:
        raise DataError(f"video list {p} lists no video")
    return videos


def evenly_spaced_starts(n_frames: int, count: int) -> list[int]:
    """Pair starts t (frame t and t+1 exist): the centres of ``count`` equal parts of frames 0..n-2.

    Returns:
        ``floor((k + 1/2) (n - 1) / count)`` for k = 0..count-1, or every start 0..n-2 when there are
        ``count`` or fewer; increasing, distinct.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if n_frames - 1 <= count:
        return list(range(max(0, n_frames - 1)))
    return [int((2 * k + 1) * (n_frames - 1) // (2 * count)) for k in range(count)]


@dataclass(frozen=True)
class VideoJob:
    """One listed video: its file, its output names, the settings."""

    source: str
    label: str
    stem: str
    out_dir: str
    frames_per_video: int
    flow_method: str

    @property
    def clip(self) -> str:
        """``<Class>/<video>``: the folder of its outputs under rgb/, rgb_next/ and flow/."""
        return f"{self.label}/{self.stem}"

    @property
    def marker(self) -> Path:
        return Path(self.out_dir) / "videos" / f"{self.clip}.json"


def process_video(job: VideoJob) -> dict[str, object]:
    """Write one video's pairs and its done marker (kept from an earlier run when complete).

    Returns:
        The marker: ``video``, ``frames`` (header count), ``fps``, ``width``, ``height``, ``starts``.

    Raises:
        DataError: the video cannot be opened or a needed frame cannot be decoded (names the file).
    """
    out = Path(job.out_dir)
    if job.marker.is_file():
        marker = json.loads(job.marker.read_text(encoding="utf-8"))
        if all((out / r).is_file() for t in marker["starts"] for r in pair_paths(job.clip, t).values()):
            return marker
    source = Path(job.source)
    capture, info = open_video(source)
    n_frames = info.frames
    if n_frames < 2:  # no usable count in the header: count by decoding, then start again
        _, n_frames = decode_frames(capture, ())
        capture, _ = open_video(source)
    starts = evenly_spaced_starts(n_frames, job.frames_per_video)
    if not starts:
        capture.release()
        raise DataError(f"video {source} has {n_frames} frames; a pair needs at least 2")
    wanted = set(starts) | {t + 1 for t in starts}
    frames, decoded = decode_frames(capture, wanted)
    lost = sorted(wanted - set(frames))
    if lost:
        raise DataError(
            f"video {source}: frame {lost[0]} (needed for a pair) does not decode; {decoded} frames decoded of the "
            f"{n_frames} its header announces: a damaged or truncated file"
        )
    sizes = {frames[t].shape for t in wanted}
    if len(sizes) != 1:
        raise DataError(f"video {source}: frames of different sizes {sorted(sizes)}")
    for t in starts:
        write_pair(out, pair_paths(job.clip, t), lambda t=t: (frames[t], frames[t + 1]), flow_method=job.flow_method)
    height, width = frames[starts[0]].shape[:2]
    marker = {"video": str(source), "frames": n_frames, "fps": info.fps, "width": width, "height": height,
              "starts": starts}
    job.marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.marker.with_name(f".{job.marker.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(marker) + "\n", encoding="utf-8")
    os.replace(tmp, job.marker)
    return marker


def _videos_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"UCF101 root {root} does not exist (expected the folder of UCF-101/ or its classes)")
    return root / "UCF-101" if (root / "UCF-101").is_dir() else root


def import_ucf101(
    root: str | os.PathLike[str],
    video_list: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    frames_per_video: int = 5,
    split: str = "flow_transfer",
    flow_method: str = "dis",
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Import the listed UCF101 videos as ``frames_per_video`` frame pairs each, with flow images.

    Args:
        root: the folder holding ``UCF-101/`` or the class folders themselves.
        video_list: a split list, e.g. ``ucfTrainTestlist/trainlist01.txt``.
        out_dir: output folder (module docstring).
        frames_per_video: pairs per video, evenly spaced.
        split: split name of every record (the trainer's flow-transfer default is ``flow_transfer``).
        flow_method: ``dis`` or ``farneback``.
        skip_bad: skip videos that cannot be decoded (logged, listed in ``bad_videos.txt``) instead of failing.
        workers: processes (default: all usable CPUs).
        progress: show a progress bar.

    Returns:
        The manifest path, ``out_dir/manifest.jsonl``.

    Raises:
        FileNotFoundError: no root, no list, or listed videos missing (the first ones named).
        DataError: a malformed list, or (without ``skip_bad``) a video that cannot be decoded.
        ConfigError: bad settings, or ``out_dir`` made with other settings.
    """
    if frames_per_video < 1:
        raise ConfigError(f"frames_per_video must be >= 1, got {frames_per_video}")
    if flow_method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {flow_method!r}: expected one of {', '.join(FLOW_METHODS)}")
    try:
        FrameRecord(id=f"{DATASET}.probe", split=split, rgb="probe.png")
    except ValueError as e:
        raise ConfigError(f"split {split!r} is not a valid split name: {e}") from None
    videos_root, out_dir = _videos_root(Path(root)), Path(out_dir)
    listed = read_video_list(video_list)
    missing = [v for v in listed if not (videos_root / v.path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(listed)} videos of {video_list} are not under {videos_root}, e.g. "
            + ", ".join(f"{videos_root / v.path} (line {v.line})" for v in missing[:5])
        )
    jobs = [
        VideoJob(str(videos_root / v.path), v.label, sanitise_stem(Path(v.path).stem), str(out_dir),
                 frames_per_video, flow_method)
        for v in listed
    ]
    check_stamp(out_dir, DATASET, {"frames_per_video": frames_per_video, "flow_method": flow_method})
    try:
        results = run_jobs(process_video, jobs, workers, desc=DATASET, unit="video", progress=progress,
                           tolerate=(DataError,) if skip_bad else ())
    except DataError as e:
        raise DataError(f"{e} (--skip-bad skips videos that cannot be decoded)") from None
    records, bad = [], []
    for job, result in zip(jobs, results, strict=True):
        if isinstance(result, Exception):
            log.warning("skipped bad video %s: %s", job.source, result)
            bad.append(f"{job.source}\t{result}")
            continue
        for t in result["starts"]:  # type: ignore[union-attr]
            records.append(FrameRecord(id=f"{DATASET}.{job.stem}.{t:06d}", split=split, **pair_paths(job.clip, t)))
    bad_list = out_dir / "bad_videos.txt"
    bad_list.unlink(missing_ok=True)
    if bad:
        bad_list.write_text("\n".join(bad) + "\n", encoding="utf-8")
        log.warning("%d of %d videos could not be decoded and were skipped; see %s", len(bad), len(jobs), bad_list)
    if not records:
        raise DataError(f"no video of {video_list} could be imported")
    header = ManifestHeader(
        dataset=DATASET,
        description=f"UCF101 (Soomro et al. 2012) videos of {Path(video_list).name}: {frames_per_video} evenly "
        f"spaced (t, t+1) pairs per video with {flow_method} flow images"
        + (f"; {len(bad)} undecodable videos skipped" if bad else ""),
    )
    return write_manifest(out_dir / MANIFEST_NAME, header, records)
