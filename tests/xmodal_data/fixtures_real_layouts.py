"""Writers of small datasets in the exact real layouts: NYU Depth V2 raw, UCF101, JHMDB.

For the importer tests and the recipes' tests. Each writer follows ../shared/DATASETS.md:

* NYUD2 raw: scene folders of ``d-<host %f>-<dev>.pgm`` (``P5 W H 65535\\n`` + little-endian uint16, the
  11-bit Kinect disparity), ``r-<host>-<dev>.ppm`` (``P6 W H 255\\n`` + RGB bytes) and ``a-<host>-<dev>.dump``
  (a 12-byte ``freenect_raw_tilt_state``); the labelled set's ``scenes`` cell array in a v7.3 (HDF5) .mat.
* UCF101: ``UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.avi`` (XviD, as the real clips), ``ucfTrainTestlist/``
  with ``classInd.txt``, ``trainlist01.txt`` (``<Class>/<file>.avi <index>``) and ``testlist01.txt``, CRLF.
* JHMDB: ``Rename_Images/<class>/<video>/%05d.png`` from 00001, ``puppet_mask/<class>/<video>/puppet_mask.mat``
  (MATLAB v5, variable ``part_mask``, H x W x T uint8) and ``splits/<class>_test_split<k>.txt``
  (``<video>.avi <1 train | 2 test>``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np
import scipy.io

from shared.imageio import write_image
from xmodal_data.importers.nyu_toolbox import NYU_CALIBRATION, NyuCalibration

__all__ = [
    "SMALL_CALIBRATION",
    "kinect_name",
    "kinect_scene_frames",
    "matlab_cellstr",
    "moving_square_frames",
    "raw_from_metres",
    "stamp_v73_header",
    "write_accel_dump",
    "write_depth_pgm",
    "write_jhmdb_splits",
    "write_jhmdb_video",
    "write_labeled_scenes_mat",
    "write_nyud2_raw_scene",
    "write_rgb_ppm",
    "write_ucf101_lists",
    "write_ucf101_video",
]

SMALL_CALIBRATION = NYU_CALIBRATION.model_copy(update={
    "width": 160, "height": 120,
    "fx_rgb": NYU_CALIBRATION.fx_rgb / 4, "fy_rgb": NYU_CALIBRATION.fy_rgb / 4,
    "cx_rgb": NYU_CALIBRATION.cx_rgb / 4, "cy_rgb": NYU_CALIBRATION.cy_rgb / 4,
    "fx_d": NYU_CALIBRATION.fx_d / 4, "fy_d": NYU_CALIBRATION.fy_d / 4,
    "cx_d": NYU_CALIBRATION.cx_d / 4, "cy_d": NYU_CALIBRATION.cy_d / 4,
})
"""The toolbox calibration for 160x120 frames: focal lengths and principal points / 4, same distortion
(it acts on normalised coordinates), rotation and translation. Small fixtures use it via ``--calibration``."""


# ---------------------------------------------------------------------------------------------- NYUD2 raw


def kinect_name(kind: str, host_time: float, device_time: int) -> str:
    """fakenect's ``"%c-%f-%u.%s"``: ``("d", 1315166485.123456, 2345678)`` -> ``d-1315166485.123456-2345678.pgm``."""
    ext = {"d": "pgm", "r": "ppm", "a": "dump"}[kind]
    return f"{kind}-{host_time:f}-{device_time}.{ext}"


def write_depth_pgm(path: Path, raw: np.ndarray) -> Path:
    """``P5 W H 65535\\n`` then the uint16 values little-endian (the recording host's order), as record.c."""
    h, w = raw.shape
    Path(path).write_bytes(f"P5 {w} {h} 65535\n".encode() + np.asarray(raw, dtype="<u2").tobytes())
    return Path(path)


def write_rgb_ppm(path: Path, rgb: np.ndarray) -> Path:
    """``P6 W H 255\\n`` then R, G, B bytes row by row."""
    h, w = rgb.shape[:2]
    Path(path).write_bytes(f"P6 {w} {h} 255\n".encode() + np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
    return Path(path)


def write_accel_dump(path: Path, xyz: tuple[int, int, int] = (-20, 820, 100), tilt: int = 0) -> Path:
    """A raw ``freenect_raw_tilt_state``: int16 x, y, z, int8 tilt angle, int32 status (12 bytes on x86-64)."""
    Path(path).write_bytes(struct.pack("<hhhbxi", *xyz, tilt, 0))
    return Path(path)


def raw_from_metres(depth_m: np.ndarray, calibration: NyuCalibration = NYU_CALIBRATION) -> np.ndarray:
    """Kinect disparity units of metric depth (inverse of ``depth_rel2depth_abs``), rounded; 0 m -> 2047."""
    depth = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(divide="ignore"):
        raw = np.rint(calibration.depth_param2 - calibration.depth_param1 / depth)
    return np.where(depth > 0, raw, 2047).astype(np.uint16)


def kinect_scene_frames(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A plausible room view: raw depth of a floor and a back wall with a box, holes, and a textured RGB.

    Returns:
        ``(raw, rgb)``: (H, W) uint16 disparity units with 2047 holes (about 8 %), (H, W, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    wall = np.full((height, width), 3.5)
    floor = 1.2 / np.maximum(rows - 0.45, 1e-3) * 0.45  # rows below the horizon get nearer
    depth = np.minimum(wall, np.where(rows > 0.45, floor, wall))
    box = (np.abs(cols - 0.35) < 0.12) & (np.abs(rows - 0.6) < 0.15)
    depth[box] = 1.8
    depth = np.clip(depth + 0.01 * rng.standard_normal(depth.shape), 0.8, 6.0)
    raw = raw_from_metres(depth)
    holes = cv2.dilate((rng.random((height, width)) < 0.004).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    raw[holes] = 2047
    raw[:, : max(1, width // 40)] = 2047  # the Kinect's blind left band
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 1.0)
    shade = (60 + 120 * (depth / depth.max()))[..., None]
    rgb = np.clip(0.5 * texture + shade, 0, 255).astype(np.uint8)
    rgb[box] = (200, 60, 40)
    return raw, rgb


def write_nyud2_raw_scene(
    folder: Path,
    depth_times: Sequence[float],
    rgb_times: Sequence[float],
    shape: tuple[int, int] = (120, 160),
    accel_times: Sequence[float] = (),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Write one scene folder: a depth PGM per depth time, an RGB PPM per RGB time, accel dumps, INDEX.txt.

    Frames at nearby times show the same view (the camera is still), with a seed per frame for the noise.

    Returns:
        ``{"d": names, "r": names, "a": names}`` in time order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[str]] = {"d": [], "r": [], "a": []}
    for kind, times in (("d", depth_times), ("r", rgb_times), ("a", accel_times)):
        for i, t in enumerate(times):
            name = kinect_name(kind, t, 1_000_000 + 33_367 * i)
            raw, rgb = kinect_scene_frames(*shape, seed=seed + i)
            if kind == "d":
                write_depth_pgm(folder / name, raw)
            elif kind == "r":
                write_rgb_ppm(folder / name, rgb)
            else:
                write_accel_dump(folder / name)
            names[kind].append(name)
    (folder / "INDEX.txt").write_text("\n".join(sorted(n for v in names.values() for n in v)) + "\n")
    return names


def matlab_cellstr(f: h5py.File, strings: Sequence[str], prefix: str) -> np.ndarray:
    """A MATLAB Nx1 cell of strings as v7.3 stores it: each string a uint16 char array under ``#refs#``
    (named ``<prefix><k>``), the cell an HDF5 (1, N) array of references to them (returned; store it)."""
    refs = f.require_group("#refs#")
    handles = []
    for k, text in enumerate(strings):
        chars = refs.create_dataset(f"{prefix}{k}", data=np.array([ord(c) for c in text], dtype=np.uint16)[:, None])
        chars.attrs["MATLAB_class"] = np.bytes_("char")
        handles.append(chars.ref)
    return np.array([handles], dtype=h5py.ref_dtype)


def stamp_v73_header(path: Path) -> Path:
    """Write MATLAB's v7.3 text header into the 512-byte user block of the HDF5 file at ``path``."""
    with path.open("r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: fixture, HDF5 schema 1.00 .")
    return path


def write_labeled_scenes_mat(path: Path, scenes: Sequence[str], mode: str = "w") -> Path:
    """A v7.3 .mat holding the labelled set's ``scenes`` (MATLAB Nx1 cell -> HDF5 (1, N) references): only them
    (``mode="w"``), or added to an existing v7.3 file such as a labelled set's arrays (``mode="a"``)."""
    with h5py.File(path, mode, **({"userblock_size": 512} if mode == "w" else {})) as f:
        f.create_dataset("scenes", data=matlab_cellstr(f, scenes, "s"))
    return stamp_v73_header(path) if mode == "w" else path


# ------------------------------------------------------------------------------------------------ videos


def moving_square_frames(
    n: int, height: int, width: int, speed: int = 2, side: int | None = None, seed: int = 0
) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB: a textured square moving ``speed`` px/frame right over a still background."""
    rng = np.random.default_rng(seed)
    side = side or height // 3
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 1.5) // 2
    square = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (5, 5), 1.5)
    frames = np.repeat(background[None], n, axis=0)
    top = (height - side) // 2
    for i in range(n):
        x = (width // 8 + speed * i) % max(1, width - side)
        frames[i, top : top + side, x : x + side] = square
    return frames


def write_ucf101_video(
    root: Path, folder_class: str, group: int, clip: int, frames: np.ndarray, fps: float = 25.0,
    file_class: str | None = None, fourcc: str = "XVID",
) -> Path:
    """Write ``UCF-101/<folder_class>/v_<file_class>_g<GG>_c<CC>.avi`` (file_class: the HandStandPushups case).

    Returns:
        The path relative to ``root/UCF-101`` as the lists write it, e.g. ``ApplyEyeMakeup/v_..._c01.avi``.
    """
    name = f"v_{file_class or folder_class}_g{group:02d}_c{clip:02d}.avi"
    path = root / "UCF-101" / folder_class / name
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV build cannot write {fourcc} video")
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return Path(folder_class) / name


def write_ucf101_lists(
    root: Path, classes: Sequence[str], train: Sequence[Path], test: Sequence[Path] = ()
) -> Path:
    """Write ``ucfTrainTestlist/`` (classInd.txt, trainlist01.txt with indices, testlist01.txt), CRLF.

    Returns:
        The ``trainlist01.txt`` path.
    """
    folder = root / "ucfTrainTestlist"
    folder.mkdir(parents=True, exist_ok=True)
    index = {c: i for i, c in enumerate(classes, start=1)}

    def write(name: str, lines: Sequence[str]) -> Path:
        (folder / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())
        return folder / name

    write("classInd.txt", [f"{i} {c}" for c, i in index.items()])
    write("testlist01.txt", [p.as_posix() for p in test])
    return write("trainlist01.txt", [f"{p.as_posix()} {index[p.parts[0]]}" for p in train])


def write_jhmdb_video(
    root: Path, action: str, video: str, frames: np.ndarray, part_mask: np.ndarray | None = None
) -> tuple[Path, Path]:
    """Write one JHMDB video: ``Rename_Images/<action>/<video>/%05d.png`` and its ``puppet_mask.mat``.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        part_mask: (H, W, T') mask (0 = background, >0 = a body part), saved as ``part_mask``; None: no file.

    Returns:
        ``(frame folder, mask file)``.
    """
    folder = root / "Rename_Images" / action / video
    for t, rgb in enumerate(frames, start=1):
        write_image(folder / f"{t:05d}.png", rgb)
    mask_path = root / "puppet_mask" / action / video / "puppet_mask.mat"
    if part_mask is not None:
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(mask_path, {"part_mask": np.asarray(part_mask, dtype=np.uint8)})
    return folder, mask_path


def write_jhmdb_splits(root: Path, action: str, videos: Mapping[str, int], k: int = 1, crlf: bool = False) -> Path:
    """Write ``splits/<action>_test_split<k>.txt``: ``<video>.avi <1 train | 2 test>`` per line."""
    path = root / "splits" / f"{action}_test_split{k}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_bytes("".join(f"{v}.avi {i} {end}" for v, i in videos.items()).encode())
    return path
