"""Optical flow: OpenCV DIS / Farnebäck between frames, Middlebury ``.flo`` and KITTI 16-bit PNG flow files,
flow images of frame pairs.

The flow convention and the flow image format are the contract in :mod:`shared.flow_image`.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from shared.atomic import write_bytes_atomic
from shared.errors import DataError
from shared.flow_image import check_flow, encode_flow_image
from shared.imageio import read_rgb

__all__ = [
    "FLOW_METHODS",
    "compute_flow",
    "flow_image_from_pair",
    "read_flo",
    "read_flow_file",
    "read_flow_png",
    "write_flo",
    "write_flow_png",
]

FLOW_METHODS = ("dis", "dis-fine", "farneback")
"""Names :func:`compute_flow` accepts."""

_FLO_MAGIC = 202021.25  # Middlebury .flo tag; reads as "PIEH" in ASCII
_FLO_HEADER = np.dtype([("magic", "<f4"), ("width", "<i4"), ("height", "<i4")])
_FLO_MAX_SIDE = 1 << 16  # a larger width or height in a header is corruption, not an image
_PNG_SCALE, _PNG_OFFSET = 64.0, 32768.0  # KITTI flow PNG: uint16 = flow * 64 + 2^15


def _to_grey(image: np.ndarray, what: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"{what} must be (H, W, 3) RGB or (H, W) grey, got shape {image.shape}")


def compute_flow(rgb_t: np.ndarray, rgb_t1: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense optical flow from frame t to frame t+1.

    Args:
        rgb_t: (H, W, 3) uint8 RGB (or (H, W) uint8 grey) frame t.
        rgb_t1: frame t+1, same shape and dtype.
        method: ``"dis"``: OpenCV DIS, preset medium (fast, the default); ``"dis-fine"``: the same refined down
            to full resolution with small dense patches (finest scale 0, 6-pixel patches every 2 pixels;
            several times slower): the medium preset stops at half resolution with 12-pixel patches every 8,
            which blurs objects of a small frame into their background (on the synthetic 96x128 clips it keeps
            a median 0.41 px of the objects' 2.75 px flow contrast with their surround, ``dis-fine`` 0.86:
            ``bench/flow_diagnosis.py``); ``"farneback"``: OpenCV Farnebäck
            with the parameters of OpenCV's tutorial (5-level pyramid at scale 0.5, window 15, 3 iterations,
            poly_n 5, poly_sigma 1.2).

    Returns:
        (H, W, 2) float32 flow in pixels: channel 0 = u (positive right), 1 = v (positive down).

    Raises:
        ValueError: unknown method, images not uint8 (H, W, 3) / (H, W), or of different shapes.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}: expected one of {', '.join(map(repr, FLOW_METHODS))}")
    if rgb_t.shape != rgb_t1.shape:
        raise ValueError(f"frames t and t+1 must have the same shape, got {rgb_t.shape} and {rgb_t1.shape}")
    grey_t, grey_t1 = _to_grey(rgb_t, "frame t"), _to_grey(rgb_t1, "frame t+1")
    if method in ("dis", "dis-fine"):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        if method == "dis-fine":
            dis.setFinestScale(0)
            dis.setPatchSize(6)
            dis.setPatchStride(2)
        flow = dis.calc(grey_t, grey_t1, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(grey_t, grey_t1, None, 0.5, 5, 15, 3, 5, 1.2, 0)
    return flow.astype(np.float32, copy=False)


def read_flo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Format: float32 magic 202021.25, int32 width, int32 height (little-endian), then height x width
    (u, v) float32 pairs, row-major.

    Returns:
        (H, W, 2) float32 flow, (u, v) pixels.

    Raises:
        DataError: missing file, bad magic, implausible size, truncated or trailing bytes (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"flow file {p} does not exist")
    data = p.read_bytes()
    if len(data) < _FLO_HEADER.itemsize:
        raise DataError(f"flow file {p} has {len(data)} bytes, fewer than the 12-byte .flo header")
    header = np.frombuffer(data, dtype=_FLO_HEADER, count=1)[0]
    if header["magic"] != np.float32(_FLO_MAGIC):
        raise DataError(f"flow file {p} starts with {header['magic']!r}, expected the .flo magic {_FLO_MAGIC}")
    width, height = int(header["width"]), int(header["height"])
    if not (0 < width <= _FLO_MAX_SIDE and 0 < height <= _FLO_MAX_SIDE):
        raise DataError(f"flow file {p} claims a {width}x{height} (WxH) image; the header is corrupt")
    expected = _FLO_HEADER.itemsize + 8 * width * height
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "followed by extra bytes"
        raise DataError(f"flow file {p} is {state}: {len(data)} bytes, expected {expected} for {width}x{height}")
    return np.frombuffer(data, dtype="<f4", offset=_FLO_HEADER.itemsize).reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike[str], flow: np.ndarray) -> Path:
    """Write flow as a Middlebury ``.flo`` file, atomically (temp file, then rename).

    Args:
        path: destination; parent directories are created.
        flow: (H, W, 2) float flow, (u, v) pixels; stored as float32.

    Returns:
        The path written.

    Raises:
        ValueError: wrong shape or dtype.
    """
    flow = check_flow(flow)
    height, width = flow.shape[:2]
    header = np.array([(_FLO_MAGIC, width, height)], dtype=_FLO_HEADER)
    data = header.tobytes() + np.ascontiguousarray(flow, dtype="<f4").tobytes()
    return write_bytes_atomic(path, data, durable=False)  # per-frame outputs: no fsync (shared.atomic)


def write_flow_png(path: str | os.PathLike[str], flow: np.ndarray, valid: np.ndarray | None = None) -> Path:
    """Write flow in the KITTI flow benchmark's format, atomically: a 3-channel 16-bit PNG.

    Channels (R, G, B) = (u * 64 + 2^15, v * 64 + 2^15, valid 1/0), rounded: 1/64-pixel steps (an end-point
    error of at most 0.011 px), range +-512 px, and about a tenth of a ``.flo``'s size for smooth fields.

    Args:
        path: destination (``.png``); parent directories are created.
        flow: (H, W, 2) float flow, (u, v) pixels.
        valid: (H, W) bool, where the flow is known (default everywhere); invalid pixels store flow 0.

    Returns:
        The path written.

    Raises:
        ValueError: wrong shape or dtype, non-finite flow where valid, or flow beyond the format's +-512 px.
    """
    flow = check_flow(flow)
    valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != flow.shape[:2]:
        raise ValueError(f"valid mask has shape {valid.shape}, expected {flow.shape[:2]}")
    flow = np.where(valid[..., None], flow, 0.0)
    if not np.isfinite(flow).all():
        raise ValueError("flow has NaN or infinite values where it is marked valid")
    coded = np.rint(flow.astype(np.float64) * _PNG_SCALE + _PNG_OFFSET)
    if coded.min(initial=0) < 0 or coded.max(initial=0) > 65535:
        raise ValueError(f"flow up to {np.abs(flow).max():.1f} px does not fit a KITTI flow PNG (+-512 px)")
    bgr = np.dstack([valid, coded[..., 1], coded[..., 0]]).astype(np.uint16)  # OpenCV writes BGR
    p = Path(path)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise DataError(f"could not encode the flow PNG {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, p)
    return p


def read_flow_png(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI-format flow PNG (:func:`write_flow_png`).

    Returns:
        flow (H, W, 2) float32 (u, v) pixels, 0 where invalid; valid (H, W) bool.

    Raises:
        DataError: missing, undecodable, or not a 3-channel 16-bit PNG (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"flow file {p} does not exist")
    data = np.fromfile(p, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if bgr is None:
        raise DataError(f"flow file {p} is empty, truncated or not a decodable PNG ({data.size} bytes)")
    if bgr.dtype != np.uint16 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise DataError(f"flow file {p} is {bgr.dtype} {bgr.shape}, expected a 3-channel 16-bit KITTI flow PNG")
    valid = bgr[..., 0] > 0
    flow = (bgr[..., [2, 1]].astype(np.float32) - _PNG_OFFSET) / _PNG_SCALE
    return np.where(valid[..., None], flow, np.float32(0.0)), valid


def read_flow_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a flow file by its extension: Middlebury ``.flo`` or KITTI ``.png``.

    Returns:
        (H, W, 2) float32 flow, (u, v) pixels.

    Raises:
        DataError: an unknown extension, or what the reader raises.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".flo":
        return read_flo(path)
    if suffix == ".png":
        return read_flow_png(path)[0]
    raise DataError(f"flow file {path}: unknown format {suffix!r}; expected .flo (Middlebury) or .png (KITTI)")


def flow_image_from_pair(
    path_t: str | os.PathLike[str], path_t1: str | os.PathLike[str], method: str = "dis", mirrored: bool = False
) -> np.ndarray:
    """Read two consecutive frames and return their flow image (:func:`encode_flow_image`).

    Args:
        path_t, path_t1: image files of frames t and t+1 (any format OpenCV reads).
        method: see :func:`compute_flow`.
        mirrored: the flow image of the pair mirrored left-right (both frames mirrored before the flow is
            computed: the exact input of a mirrored training sample, which flipping the flow image only approximates).

    Returns:
        (H, W, 3) uint8 flow image (u, v, magnitude).

    Raises:
        ImageReadError: a file is missing or undecodable.
        DataError: the frames differ in size.
        ValueError: unknown method.
    """
    rgb_t, rgb_t1 = read_rgb(path_t), read_rgb(path_t1)
    if rgb_t.shape != rgb_t1.shape:
        raise DataError(
            f"frames differ in size: {path_t} is {rgb_t.shape[0]}x{rgb_t.shape[1]} but {path_t1} is "
            f"{rgb_t1.shape[0]}x{rgb_t1.shape[1]} (HxW); expected consecutive frames of one video"
        )
    if mirrored:
        rgb_t, rgb_t1 = np.ascontiguousarray(rgb_t[:, ::-1]), np.ascontiguousarray(rgb_t1[:, ::-1])
    return encode_flow_image(compute_flow(rgb_t, rgb_t1, method))
