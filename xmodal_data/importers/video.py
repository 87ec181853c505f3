"""Import videos or frame folders as (t, t+step) frame pairs with flow images, for flow supervision transfer.

A source is a video file (anything ``cv2.VideoCapture`` decodes) or a folder of frames (the image files in
it, in natural order: ``frame_2`` before ``frame_10``; frame index = position in that order). A pair starts
at every ``stride``-th frame ``t = 0, stride, 2 * stride, ...`` that has a frame ``t + step``. Both frames
are optionally shrunk so their longer side is at most ``max_side`` (area interpolation), and the flow
from t to t+step is computed and encoded with :mod:`xmodal_data.flow` (DIS by default).

Outputs under ``out_dir``, named by the clip's stem and ``t``:

* ``rgb/<stem>/<t:06d>.png`` frame t, ``rgb_next/<stem>/<t:06d>.png`` frame t+step (RGB uint8),
* ``flow/<stem>/<t:06d>.png`` the flow image (u, v, magnitude as ``x * 16 + 128``), and ``flow_mirror/...`` the flow
  image of the mirrored pair,
* ``manifest.jsonl``: unlabelled records (``objects`` and ``intrinsics`` absent) in one split, frame ids
  ``<dataset>.<stem>.<t:06d>`` where the stem (video file stem or folder name) is reduced to the frame-id
  alphabet,
* ``import.json``: the settings stamp (step, max_side, flow method).

Resumable: a pair whose three files exist is not decoded again (folders) or not re-encoded (videos,
which are always decoded sequentially: seeking is unreliable across codecs). Files are keyed by clip stem
and ``t``, so importing a *different* clip with the same stem into the same folder would keep stale files:
give each dataset its own output folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from shared.errors import ConfigError, DataError
from shared.flow_image import encode_flow_image
from shared.ids import FRAME_ID_PATTERN
from shared.imageio import read_rgb, write_image
from shared.manifest import FrameRecord, ManifestHeader, write_manifest
from xmodal_data.flow import FLOW_METHODS, compute_flow
from xmodal_data.importers.stamp import check_stamp

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST_NAME",
    "PAIR_KINDS",
    "VideoInfo",
    "decode_frames",
    "fit_max_side",
    "import_video",
    "list_frames",
    "open_video",
    "pair_paths",
    "pair_starts",
    "sanitise_stem",
    "write_pair",
]

MANIFEST_NAME = "manifest.jsonl"
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) taken as frames in a frame folder; other files are ignored."""

PAIR_KINDS = ("rgb", "rgb_next", "flow", "flow_mirror")
"""The files of a pair, by manifest field."""

_MAX_ID = 128  # frame ids are at most 128 characters (shared.ids)
Pairs = Iterator[tuple[int, Callable[[], tuple[np.ndarray, np.ndarray]]]]
"""``(t, load)`` per pair; ``load()`` returns frames t and t+step as (H, W, 3) uint8 RGB."""


def sanitise_stem(stem: str) -> str:
    """Reduce a file or folder name to the frame-id alphabet.

    Characters outside ``[A-Za-z0-9._:-]`` become ``_`` (runs collapse), leading non-alphanumerics are
    dropped (an id starts alphanumeric); an empty result becomes ``clip``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._:-]+", "_", stem)
    return re.sub(r"^[^A-Za-z0-9]+", "", cleaned) or "clip"


def pair_starts(n_frames: int, stride: int, step: int) -> list[int]:
    """Frames t that start a pair: every ``stride``-th frame from 0 with a frame ``t + step`` in the clip."""
    return list(range(0, max(0, n_frames - step), stride))


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink ``image`` (area interpolation) so its longer side is at most ``max_side`` pixels; never enlarge."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _natural_key(path: Path) -> list[str | int]:
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", path.name))]


def list_frames(folder: Path) -> list[Path]:
    """The frame files of a folder (suffix in :data:`IMAGE_SUFFIXES`), in natural order.

    Raises:
        DataError: the folder holds no such file.
    """
    frames = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=_natural_key)
    if not frames:
        raise DataError(f"frame folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return frames


def _folder_pairs(folder: Path, stride: int, step: int) -> tuple[int, Pairs]:
    """Frame count and lazy pairs of a frame folder; every frame read must match the first one's size."""
    frames = list_frames(folder)
    first: list[tuple[Path, tuple[int, ...]]] = []

    def read(path: Path) -> np.ndarray:
        rgb = read_rgb(path)
        if not first:
            first.append((path, rgb.shape))
        elif rgb.shape != first[0][1]:
            (p0, s0) = first[0]
            raise DataError(
                f"frame {path} is {rgb.shape[0]}x{rgb.shape[1]} but {p0} is {s0[0]}x{s0[1]} (HxW): "
                f"a frame folder must hold the frames of one video, all of one size"
            )
        return rgb

    def pairs() -> Pairs:
        for t in pair_starts(len(frames), stride, step):
            yield t, lambda t=t: (read(frames[t]), read(frames[t + step]))

    return len(frames), pairs()


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's header says (OpenCV's properties); the frame count is the container's."""

    frames: int
    fps: float
    width: int
    height: int


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video for sequential decoding and read its header.

    Raises:
        FileNotFoundError: no such file.
        DataError: OpenCV cannot open it (names the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"cannot open video {path}: not a file OpenCV can decode")
    info = VideoInfo(
        frames=max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))),
        fps=float(capture.get(cv2.CAP_PROP_FPS)),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return capture, info


def decode_frames(capture: cv2.VideoCapture, wanted: Collection[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially (seeking is unreliable across codecs), keeping the frames at ``wanted`` indices.

    Decoding stops after the last wanted frame, or at the end of the stream. The capture is released.

    Returns:
        ``({index: (H, W, 3) uint8 RGB}, frames decoded)``; without ``wanted`` every frame is decoded and
        counted, none kept.
    """
    last = max(wanted, default=None)
    kept: dict[int, np.ndarray] = {}
    index = 0
    try:
        while last is None or index <= last:
            if index in wanted:
                ok, bgr = capture.read()
                if ok:
                    kept[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                ok = capture.grab()
            if not ok:
                break
            index += 1
    finally:
        capture.release()
    return kept, index


def _video_pairs(path: Path, stride: int, step: int) -> tuple[int, Pairs]:
    """Estimated frame count and pairs of a video, decoded sequentially."""
    capture, info = open_video(path)

    def pairs() -> Pairs:
        pending: dict[int, np.ndarray] = {}
        index = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if index % stride == 0:
                    pending[index] = rgb
                if index - step in pending:
                    t = index - step
                    first, second = pending.pop(t), rgb
                    yield t, lambda first=first, second=second: (first, second)
                index += 1
        finally:
            capture.release()
        if index <= step:
            raise DataError(f"video {path} has {index} decodable frames; a pair needs at least {step + 1}")

    return info.frames, pairs()


def pair_paths(stem: str, t: int, kinds: Sequence[str] = PAIR_KINDS, digits: int = 6) -> dict[str, str]:
    """Output paths of pair ``t`` of clip ``stem``, relative to the output folder: ``<kind>/<stem>/<t>.png``."""
    return {kind: f"{kind}/{stem}/{t:0{digits}d}.png" for kind in kinds}


def write_pair(
    out_dir: Path,
    rel: Mapping[str, str],
    load: Callable[[], tuple[np.ndarray, np.ndarray]],
    max_side: int | None = None,
    flow_method: str = "dis",
) -> bool:
    """Write the missing files of one pair; the frames are loaded only when something is missing.

    Args:
        out_dir: output folder.
        rel: paths relative to ``out_dir`` by kind, a subset of ``rgb`` (frame t), ``rgb_next`` (frame
            t + step), ``flow`` (the flow image from t to t + step) and ``flow_mirror`` (the flow image of the
            mirrored pair: the exact input of a mirrored training sample, flow methods not being mirror-equivariant).
        load: returns frames t and t + step, (H, W, 3) uint8 RGB of one size.
        max_side: shrink both frames first (:func:`fit_max_side`).
        flow_method: :func:`xmodal_data.flow.compute_flow` method.

    Returns:
        True when something was written.
    """
    missing = {kind for kind, r in rel.items() if not (out_dir / r).is_file()}
    if not missing:
        return False
    first, second = (fit_max_side(frame, max_side) for frame in load())
    if "rgb" in missing:
        write_image(out_dir / rel["rgb"], first)
    if "rgb_next" in missing:
        write_image(out_dir / rel["rgb_next"], second)
    if "flow" in missing:
        write_image(out_dir / rel["flow"], encode_flow_image(compute_flow(first, second, flow_method)))
    if "flow_mirror" in missing:
        mirrored = (np.ascontiguousarray(frame[:, ::-1]) for frame in (first, second))
        write_image(out_dir / rel["flow_mirror"], encode_flow_image(compute_flow(*mirrored, flow_method)))
    return True


def _clip_records(
    source: Path,
    stem: str,
    out_dir: Path,
    dataset: str,
    split: str,
    stride: int,
    step: int,
    max_side: int | None,
    flow_method: str,
    progress: bool,
) -> list[FrameRecord]:
    """Write one clip's missing pair files and return its records."""
    if not source.exists():
        raise FileNotFoundError(f"video source {source} does not exist (expected a video file or a frame folder)")
    n_frames, pairs = (_folder_pairs if source.is_dir() else _video_pairs)(source, stride, step)
    records = []
    bar = tqdm(pairs, total=len(pair_starts(n_frames, stride, step)), desc=stem, unit="pair", disable=not progress)
    for t, load in bar:
        rel = pair_paths(stem, t)
        write_pair(out_dir, rel, load, max_side, flow_method)
        records.append(FrameRecord(id=f"{dataset}.{stem}.{t:06d}", split=split, **rel))
    if not records:
        raise DataError(f"{source} has {n_frames} frames; a pair needs at least {step + 1}")
    return records


def _check_settings(dataset: str, split: str, stride: int, step: int, max_side: int | None, flow_method: str) -> None:
    if stride < 1 or step < 1:
        raise ConfigError(f"stride and step must be >= 1, got stride={stride} step={step}")
    if max_side is not None and max_side < 16:
        raise ConfigError(f"max_side must be >= 16 pixels (or None to keep the size), got {max_side}")
    if flow_method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {flow_method!r}: expected one of {', '.join(FLOW_METHODS)}")
    try:
        FrameRecord(id=f"{dataset}.probe", split=split, rgb="probe.png")
        ManifestHeader(dataset=dataset)
    except ValidationError as e:
        raise ConfigError(
            f"dataset {dataset!r} / split {split!r}: {e.errors()[0]['msg']} (both must be lower-case "
            f"letters, digits, '_' or '-', starting with a letter or digit; frame ids match {FRAME_ID_PATTERN})"
        ) from None


def import_video(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    dataset: str = "video",
    stride: int = 10,
    step: int = 1,
    max_side: int | None = None,
    split: str = "flow_transfer",
    progress: bool = True,
    flow_method: str = "dis",
) -> Path:
    """Import one or more videos / frame folders as frame pairs plus flow images, with one manifest.

    Args:
        source: a video file or a frame folder, or a sequence of them (one manifest for all; their
            sanitised stems must differ).
        out_dir: output folder (layout in the module docstring).
        dataset: frame-id prefix and manifest dataset name.
        stride: a pair starts every ``stride`` frames.
        step: the pair's second frame is ``t + step``.
        max_side: shrink frames so the longer side is at most this many pixels; None keeps the size.
        split: split name of every record.
        progress: show a progress bar per clip.
        flow_method: :func:`xmodal_data.flow.compute_flow` method (``dis`` or ``farneback``).

    Returns:
        The manifest path, ``out_dir/manifest.jsonl``.

    Raises:
        FileNotFoundError: a source does not exist.
        DataError: an unreadable video, a folder without frames, frames of different sizes in a folder,
            a corrupt frame (ImageReadError), a clip too short for one pair; each names the file.
        ConfigError: bad settings, two sources with the same stem, ``out_dir`` made with other settings.
    """
    sources = [Path(source)] if isinstance(source, str | os.PathLike) else [Path(s) for s in source]
    _check_settings(dataset, split, stride, step, max_side, flow_method)
    room = _MAX_ID - len(dataset) - len(".") - len(".000000")
    stems: dict[str, Path] = {}
    for s in sources:
        stem = sanitise_stem(s.name if s.is_dir() else s.stem)[:room]
        if stem in stems:
            raise ConfigError(f"sources {stems[stem]} and {s} both give the clip name {stem!r}; rename one")
        stems[stem] = s
    out_dir = Path(out_dir)
    check_stamp(out_dir, "video", {"step": step, "max_side": max_side, "flow_method": flow_method})
    records = [
        record
        for stem, s in stems.items()
        for record in _clip_records(s, stem, out_dir, dataset, split, stride, step, max_side, flow_method, progress)
    ]
    header = ManifestHeader(
        dataset=dataset,
        description=f"frame pairs (t, t+{step}) every {stride} frames with {flow_method} flow images from "
        f"{len(sources)} clip(s), first {sources[0]}",
    )
    return write_manifest(out_dir / MANIFEST_NAME, header, records)
