"""NYU Depth V2 raw scene folders: file names, the toolbox's timestamp sync, frame sampling, PGM/PPM payloads.

A scene folder (e.g. ``bedroom_0001``) holds the Kinect dump that libfreenect's ``fakenect/record.c`` writes,
file names ``"%c-%f-%u.%s"``:

* ``d-<host>-<dev>.pgm``: depth, ``P5 640 480 65535\\n`` then 640x480 uint16 in the recording host's
  byte order, i.e. **little-endian** (the toolbox calls ``swapbytes`` after MATLAB's big-endian ``imread``;
  OpenCV and PIL read these files byte-swapped, so they are parsed here with numpy);
* ``r-<host>-<dev>.ppm``: RGB, ``P6 640 480 255\\n`` then R, G, B bytes;
* ``a-<host>-<dev>.dump``: accelerometer state (not used: HHA estimates gravity from the depth itself).

``<host>`` is the host clock in seconds with 6 decimals, ``<dev>`` the Kinect's uint32 frame timestamp.
Other files (``INDEX.txt``, ...) are ignored. The toolbox classifies by ``^d-*``, ``^r-*``, ``^a-*``, which
match any name starting with d, r or a; here the kind letter must be followed by ``-``, and such a name
that is not ``<kind>-<seconds>-<uint>.<ext>`` fails (the toolbox would read its time as NaN).

Sync (``get_synched_frames.m``): names are sorted; every depth frame is kept and matched to the RGB frame
whose host time is nearest, ties going to the later one (the toolbox's forward-moving pointer gives exactly
this for name-sorted times); times are compared as float64, like MATLAB's ``str2double``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DataError, ImageReadError

__all__ = [
    "SceneListing",
    "check_netpbm",
    "list_scene",
    "nearest_later",
    "read_depth_pgm",
    "read_netpbm_header",
    "read_rgb_ppm",
    "sample_every",
]

_NAME = re.compile(r"^(?P<kind>[dra])-(?P<host>\d+(?:\.\d*)?)-(?P<dev>\d+)\.(?P<ext>pgm|ppm|dump)$")
_EXT = {"d": "pgm", "r": "ppm", "a": "dump"}
_MAX_RAW = 2047  # FREENECT_DEPTH_11BIT: 0..2047 (2047 = no return)
_HEADER_BYTES = 64  # a netpbm header of a real frame is 15-17 bytes


@dataclass(frozen=True)
class SceneListing:
    """The depth and RGB frames of one scene folder, name-sorted, with host times (float64 seconds)."""

    folder: Path
    depth: tuple[str, ...]
    depth_times: np.ndarray
    rgb: tuple[str, ...]
    rgb_times: np.ndarray


def _times(folder: Path, names: list[str]) -> np.ndarray:
    times = np.array([float(_NAME.match(n)["host"]) for n in names], dtype=np.float64)  # type: ignore[index]
    step = np.flatnonzero(np.diff(times) < 0)
    if step.size:
        i = int(step[0])
        raise DataError(
            f"{folder}: {names[i + 1]} sorts after {names[i]} but is older; the toolbox's sync needs name order "
            "= time order (host times with a different number of digits?)"
        )
    return times


def list_scene(folder: str | os.PathLike[str]) -> SceneListing:
    """List a scene folder's depth and RGB frames.

    Raises:
        FileNotFoundError: the folder does not exist.
        DataError: a ``d-``/``r-``/``a-`` file whose name is not ``<kind>-<seconds>-<uint>.<ext>``, name order
            that is not time order, or no depth or no RGB frame at all (the timestamps can never match).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"scene folder {folder} does not exist")
    kinds: dict[str, list[str]] = {"d": [], "r": [], "a": []}
    for name in sorted(p.name for p in folder.iterdir()):
        if len(name) < 2 or name[1] != "-" or name[0] not in kinds:
            continue
        m = _NAME.match(name)
        if m is None or m["ext"] != _EXT[name[0]]:
            raise DataError(
                f"{folder / name}: expected a Kinect dump name {name[0]}-<host seconds>-<device timestamp>."
                f"{_EXT[name[0]]} (as d-1315166485.123456-2345678.pgm)"
            )
        kinds[name[0]].append(name)
    for kind, what in (("d", "depth (d-*.pgm)"), ("r", "RGB (r-*.ppm)")):
        if not kinds[kind]:
            found = {k: len(v) for k, v in kinds.items()}
            raise DataError(
                f"scene {folder} has no {what} frames (depth/RGB/accel: {found['d']}/{found['r']}/{found['a']}): "
                "no depth frame can be matched to an RGB frame"
            )
    return SceneListing(
        folder, tuple(kinds["d"]), _times(folder, kinds["d"]), tuple(kinds["r"]), _times(folder, kinds["r"])
    )


def nearest_later(times: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each time, the index of the nearest candidate time; a tie goes to the later candidate.

    This is ``get_synched_frames.m``'s pointer walk (advance while the next candidate is not farther) for
    sorted inputs; equal candidate times resolve to the last of them, as the walk does.

    Args:
        times: (N,) float64 sorted times (depth frames).
        candidates: (M,) float64 sorted times (RGB frames), M >= 1.

    Returns:
        (N,) int64 indices into ``candidates``.
    """
    times, candidates = np.asarray(times, dtype=np.float64), np.asarray(candidates, dtype=np.float64)
    if candidates.size == 0:
        raise ValueError("nearest_later needs at least one candidate time")
    after = np.searchsorted(candidates, times, side="right")  # first candidate later than the time
    before = np.clip(after - 1, 0, None)  # last candidate at or before it (the last of equal ones)
    later = np.clip(after, None, candidates.size - 1)
    later = np.searchsorted(candidates, candidates[later], side="right") - 1  # last of its equal times
    take_later = (after == 0) | (
        (after < candidates.size) & (np.abs(times - candidates[later]) <= np.abs(times - candidates[before]))
    )
    return np.where(take_later, later, before).astype(np.int64)


def sample_every(times: np.ndarray, every_s: float) -> np.ndarray:
    """Indices of frames at least ``every_s`` apart: the first frame, then each first frame that is
    ``every_s`` seconds or more after the last one taken.

    Args:
        times: (N,) sorted times in seconds.
        every_s: spacing in seconds, > 0.

    Returns:
        (K,) int64 indices, increasing.
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be > 0 seconds, got {every_s}")
    taken: list[int] = []
    next_time = -np.inf
    for i, t in enumerate(np.asarray(times, dtype=np.float64).tolist()):
        if t >= next_time:
            taken.append(i)
            next_time = t + every_s
    return np.array(taken, dtype=np.int64)


def read_netpbm_header(path: str | os.PathLike[str], magic: bytes) -> tuple[int, int, int, int]:
    """Parse a binary netpbm header (``P5``/``P6``, width, height, maxval, one whitespace byte; ``#`` comments).

    Returns:
        ``(width, height, maxval, payload_offset)``.

    Raises:
        DataError: naming the file: another magic or a malformed header; ImageReadError (a DataError) for a
            missing file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"frame {p} does not exist")
    with p.open("rb") as fh:
        head = fh.read(_HEADER_BYTES)
    fields: list[int] = []
    pos = 2
    if not head.startswith(magic):
        raise DataError(f"{p} starts with {head[:2]!r}, expected the netpbm magic {magic!r}")
    malformed = f"{p}: malformed {magic.decode()} header {head[:32]!r}; expected '{magic.decode()} W H MAXVAL'"
    while len(fields) < 3:
        while pos < len(head) and head[pos : pos + 1].isspace():
            pos += 1
        if head[pos : pos + 1] == b"#":
            end = head.find(b"\n", pos)
            pos = len(head) if end < 0 else end + 1
            continue
        start = pos
        while pos < len(head) and head[pos : pos + 1].isdigit():
            pos += 1
        if start == pos or pos >= len(head):
            raise DataError(malformed)
        fields.append(int(head[start:pos]))
    if not head[pos : pos + 1].isspace():
        raise DataError(malformed)
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise DataError(f"{p}: header claims {width}x{height} with maxval {maxval}")
    return width, height, maxval, pos + 1


def check_netpbm(path: str | os.PathLike[str], magic: bytes, channels: int) -> tuple[int, int, int, int]:
    """Check a binary netpbm file's header and that its size matches it, without reading the payload.

    Args:
        path: the file.
        magic: ``b"P5"`` (grey) or ``b"P6"`` (RGB).
        channels: samples per pixel (1 or 3); samples are 2 bytes when maxval > 255.

    Returns:
        ``(width, height, maxval, payload_offset)``.

    Raises:
        DataError: see :func:`read_netpbm_header`; ImageReadError (a DataError) for a truncated file or one
            followed by extra bytes.
    """
    p = Path(path)
    width, height, maxval, offset = read_netpbm_header(p, magic)
    expected = width * height * channels * (2 if maxval > 255 else 1)
    size = p.stat().st_size - offset
    if size != expected:
        state = "truncated" if size < expected else "followed by extra bytes"
        raise ImageReadError(
            f"{p} is {state}: {size} payload bytes after its {offset}-byte header, expected {expected} "
            f"for {width}x{height}x{channels} at maxval {maxval}"
        )
    return width, height, maxval, offset


def read_depth_pgm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a raw Kinect depth PGM: (H, W) uint16 disparity units 0..2047, from the little-endian payload.

    Raises:
        DataError: missing file, not a 16-bit P5, truncated or over-long payload, or values above 2047
            (a big-endian or already converted file), each naming the file.
    """
    p = Path(path)
    width, height, maxval, offset = check_netpbm(p, b"P5", 1)
    if maxval < 256:
        raise DataError(f"{p}: maxval {maxval} is 8-bit, expected a 16-bit Kinect depth PGM (65535)")
    raw = np.fromfile(p, dtype="<u2", offset=offset).reshape(height, width)
    if raw.max(initial=0) > _MAX_RAW:
        raise DataError(
            f"{p}: values up to {raw.max()} read little-endian, expected 11-bit Kinect depth (0..{_MAX_RAW}); "
            "was the file converted or written big-endian?"
        )
    return raw.astype(np.uint16)


def read_rgb_ppm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Kinect RGB PPM: (H, W, 3) uint8 RGB.

    Raises:
        DataError: missing file, not an 8-bit P6, truncated or over-long payload, each naming the file.
    """
    p = Path(path)
    width, height, maxval, offset = check_netpbm(p, b"P6", 3)
    if maxval != 255:
        raise DataError(f"{p}: maxval {maxval}, expected an 8-bit RGB PPM (255)")
    return np.fromfile(p, dtype=np.uint8, offset=offset).reshape(height, width, 3)
