"""Image files at the edge: checked reads and atomic writes.

Reads raise :class:`ImageReadError` naming the file; depth reads refuse 8-bit files, because an
8-bit "depth" PNG is almost always a visualisation, not metric depth. Writes go to a temp name and are
renamed into place, so an interrupted job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from shared.atomic import write_bytes_atomic
from shared.errors import DataError, ImageReadError

__all__ = ["read_depth_m", "read_depth_raw", "read_rgb", "write_depth_mm", "write_image"]


def _imread(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image {p} does not exist")
    data = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise ImageReadError(f"image {p} is empty, truncated or not a decodable image ({data.size} bytes)")
    return img


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a colour image as uint8 RGB, shape (H, W, 3)."""
    img = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel 16-bit depth PNG as stored (uint16, shape (H, W)).

    Raises:
        ImageReadError: missing or undecodable file.
        DataError: the file is not single-channel 16-bit.
    """
    img = _imread(path, cv2.IMREAD_UNCHANGED)
    if img.dtype != np.uint16:
        raise DataError(f"depth image {path} is {img.dtype}, expected a 16-bit PNG (uint16 millimetres)")
    if img.ndim != 2:
        raise DataError(f"depth image {path} has {img.shape[2]} channels, expected 1")
    return img


def read_depth_m(path: str | os.PathLike[str], units_per_metre: float = 1000.0) -> np.ndarray:
    """Read a 16-bit depth PNG as float64 metres (0 stays 0 = missing).

    Args:
        units_per_metre: 1000 for millimetres (our manifests), 10000 for NYUD2's 0.1 mm files.
    """
    return read_depth_raw(path).astype(np.float64) / units_per_metre


def _atomic_imwrite(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise DataError(f"could not encode image for {path} (dtype {img.dtype}, shape {img.shape})")
    return write_bytes_atomic(path, buf.tobytes(), durable=False)  # per-frame outputs: no fsync (shared.atomic)


def write_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write a uint8 RGB (H, W, 3) or grey (H, W) image atomically."""
    if rgb.dtype != np.uint8:
        raise DataError(f"write_image expects uint8, got {rgb.dtype} for {path}")
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    return _atomic_imwrite(Path(path), img)


def write_depth_mm(path: str | os.PathLike[str], depth_m: np.ndarray) -> Path:
    """Write metric depth (float metres, 0 or NaN = missing) as a uint16 millimetre PNG, atomically."""
    mm = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0) * 1000.0
    if mm.max(initial=0.0) > 65535:
        raise DataError(f"depth up to {mm.max() / 1000:.1f} m does not fit a uint16 millimetre PNG ({path})")
    return _atomic_imwrite(Path(path), np.rint(np.clip(mm, 0, 65535)).astype(np.uint16))
