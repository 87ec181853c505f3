"""The NYU Depth V2 toolbox's geometry as pure numpy functions (Silberman et al., ECCV 2012).

A float64 port of ``camera_params.m``, ``undistort.m`` (Bouguet's ``rect`` with ``apply_distortion``),
``depth_rel2depth_abs.m`` and ``project_depth_map.m`` with its helpers ``depth_plane2depth_world.m``,
``depth_world2rgb_world.m`` and ``rgb_world2rgb_plane.m`` (toolbox copy: PrincetonVision/SUN3Dsfm
``lib/nyu/``). It keeps the toolbox's own pixel conventions, which differ between its steps:

* ``undistort`` casts rays from 0-based pixel coordinates (``px - 1``) and reads the result as 0-based, so
  there the principal point counts from 0;
* ``depth_plane2depth_world`` back-projects 1-based pixels (``meshgrid(1:640, 1:480)``) and the projection
  writes ``depthOut(yProj, xProj)`` 1-based, so there it counts from 1. The registered depth therefore has
  the RGB intrinsics with a 1-based principal point: :meth:`NyuCalibration.rgb_intrinsics` converts
  them to :class:`shared.camera.Intrinsics` (0-based) for HHA.

MATLAB's ``round`` rounds half away from zero and ``uint8`` also saturates; both are reproduced. The
toolbox's functions assert 480x640 frames; here the size comes from the calibration (real data: 640x480).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.camera import Intrinsics
from shared.errors import ConfigError

__all__ = [
    "NYU_CALIBRATION",
    "NyuCalibration",
    "Undistortion",
    "depth_rel2depth_abs",
    "matlab_round",
    "project_depth_map",
    "read_calibration",
    "undistort",
    "undistortion",
]

Five = tuple[float, float, float, float, float]


class NyuCalibration(BaseModel):
    """The Kinect calibration of ``camera_params.m``, field names as its variables (defaults: its values).

    ``k_rgb`` / ``k_d`` are ``[k1 k2 p1 p2 k3]``; ``rotation`` holds the nine numbers written inside
    ``R = -[ ... ]`` in file order (the toolbox negates them, reshapes column-major and takes
    ``inv(R')``: :meth:`rotation_matrix`); the translation is applied as ``[t_x; t_z; t_y]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(640, gt=1, description="frame width, pixels (the toolbox asserts 640)")
    height: int = Field(480, gt=1, description="frame height, pixels (the toolbox asserts 480)")
    max_depth: float = Field(10.0, gt=0, description="maxDepth, metres: larger depths are clipped to it")
    fx_rgb: float = Field(5.1885790117450188e02, gt=0)
    fy_rgb: float = Field(5.1946961112127485e02, gt=0)
    cx_rgb: float = 3.2558244941119034e02
    cy_rgb: float = 2.5373616633400465e02
    k_rgb: Five = (2.0796615318809061e-01, -5.8613825163911781e-01, 7.2231363135888329e-04,
                   1.0479627195765181e-03, 4.9856986684705107e-01)
    fx_d: float = Field(5.8262448167737955e02, gt=0)
    fy_d: float = Field(5.8269103270988637e02, gt=0)
    cx_d: float = 3.1304475870804731e02
    cy_d: float = 2.3844389626620386e02
    k_d: Five = (-9.9897236553084481e-02, 3.9065324602765344e-01, 1.9290592870229277e-03,
                 -1.9422022475975055e-03, -5.1031725053400578e-01)
    rotation: tuple[float, float, float, float, float, float, float, float, float] = (
        9.9997798940829263e-01, 5.0518419386157446e-03, 4.3011152014118693e-03,
        -5.0359919480810989e-03, 9.9998051861143999e-01, -3.6879781309514218e-03,
        -4.3196624923060242e-03, 3.6662365748484798e-03, 9.9998394948385538e-01,
    )
    t_x: float = 2.5031875059141302e-02
    t_z: float = -2.9342312935846411e-04
    t_y: float = 6.6238747008330102e-04
    depth_param1: float = 351.3
    depth_param2: float = 1092.5

    def rotation_matrix(self) -> np.ndarray:
        """``R`` as ``camera_params.m`` leaves it: ``inv(reshape(-values, [3 3])')``, (3, 3) float64."""
        return np.linalg.inv((-np.asarray(self.rotation, dtype=np.float64)).reshape(3, 3, order="F").T)

    def translation(self) -> np.ndarray:
        """``T = [t_x; t_z; t_y]`` (``depth_world2rgb_world.m``'s order), (3,) float64 metres."""
        return np.array([self.t_x, self.t_z, self.t_y], dtype=np.float64)

    def rgb_intrinsics(self) -> Intrinsics:
        """The RGB camera of the registered depth, 0-based principal point (the toolbox's is 1-based here)."""
        return Intrinsics.from_one_based(self.fx_rgb, self.fy_rgb, self.cx_rgb, self.cy_rgb, self.width, self.height)


NYU_CALIBRATION = NyuCalibration()
"""``camera_params.m`` at full precision (RGBDemo calibration of the NYU Kinect, 640x480)."""


def read_calibration(path: str | os.PathLike[str]) -> NyuCalibration:
    """Read a JSON object of :class:`NyuCalibration` fields; fields it omits keep ``camera_params.m``'s values.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: not a JSON object, an unknown field or an invalid value (names the file and field).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"calibration file {p} does not exist (expected a JSON object of camera_params fields)")
    try:
        values = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"calibration file {p} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"calibration file {p} holds a {type(values).__name__}, expected a JSON object")
    try:
        return NyuCalibration.model_validate(NYU_CALIBRATION.model_dump() | values)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"calibration file {p}: field {field!r}: {err['msg']}") from None


def matlab_round(x: np.ndarray) -> np.ndarray:
    """MATLAB's ``round``: half away from zero (NaN stays NaN), float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


class Undistortion:
    """Precomputed bilinear lookup of ``undistort.m`` for one camera and image size.

    For every output pixel: the four source pixels (flat 0-based indices) and their weights, and whether
    the source lies inside (``rect``'s ``good_points``); outside pixels become 255, as in the toolbox.
    """

    def __init__(self, fc: tuple[float, float], cc: tuple[float, float], kc: Five, height: int, width: int) -> None:
        k = np.asarray(kc, dtype=np.float64)
        kk_new = np.array([[fc[0], 0.0, cc[0]], [0.0, fc[1], cc[1]], [0.0, 0.0, 1.0]])
        # rect: pixels listed column by column as in MATLAB (order does not change any value).
        px, py = np.meshgrid(np.arange(1, width + 1, dtype=np.float64), np.arange(1, height + 1, dtype=np.float64))
        px, py = px.ravel(), py.ravel()
        rays = np.linalg.inv(kk_new) @ np.stack([px - 1, py - 1, np.ones_like(px)])
        x, y = rays[0] / rays[2], rays[1] / rays[2]
        # apply_distortion (radial k1 k2 k3, tangential p1 p2)
        r2 = x**2 + y**2
        r4, r6 = r2**2, r2**3
        cdist = 1 + k[0] * r2 + k[1] * r4 + k[4] * r6
        a1, a2, a3 = 2.0 * x * y, r2 + 2 * x**2, r2 + 2 * y**2
        xd = x * cdist + (k[2] * a1 + k[3] * a2)
        yd = y * cdist + (k[2] * a3 + k[3] * a1)
        px2 = fc[0] * xd + cc[0]  # the skew term alpha_c * yd is 0 (undistort passes alpha_c = 0)
        py2 = fc[1] * yd + cc[1]
        px0, py0 = np.floor(px2), np.floor(py2)
        self.inside = (px0 >= 0) & (px0 <= width - 2) & (py0 >= 0) & (py0 <= height - 2)
        ax, ay = px2 - px0, py2 - py0
        self.weights = np.stack([(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax])[:, self.inside]
        c0, r0 = px0[self.inside].astype(np.int64), py0[self.inside].astype(np.int64)
        top, bottom = r0 * width + c0, (r0 + 1) * width + c0
        self.sources = np.stack([top, top + 1, bottom, bottom + 1])
        self.shape = (height, width)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Undistort one (H, W) channel: float64, 255 where the source falls outside."""
        if image.shape != self.shape:
            raise ValueError(f"image is {image.shape} but the undistortion is for {self.shape}")
        flat = np.asarray(image, dtype=np.float64).ravel()
        out = np.full(flat.size, 255.0)
        w, s = self.weights, self.sources
        out[self.inside] = w[0] * flat[s[0]] + w[1] * flat[s[1]] + w[2] * flat[s[2]] + w[3] * flat[s[3]]
        return out.reshape(self.shape)


@lru_cache(maxsize=4)
def undistortion(calibration: NyuCalibration, camera: str) -> Undistortion:
    """The (cached) :class:`Undistortion` of the ``"rgb"`` or ``"d"`` camera of ``calibration``."""
    if camera not in ("rgb", "d"):
        raise ValueError(f"camera must be 'rgb' or 'd', got {camera!r}")
    c = calibration
    fc = (getattr(c, f"fx_{camera}"), getattr(c, f"fy_{camera}"))
    cc = (getattr(c, f"cx_{camera}"), getattr(c, f"cy_{camera}"))
    return Undistortion(fc, cc, getattr(c, f"k_{camera}"), c.height, c.width)


def undistort(image: np.ndarray, calibration: NyuCalibration, camera: str) -> np.ndarray:
    """``undistort.m`` of an (H, W) channel with the ``"rgb"`` or ``"d"`` camera: float64, 255 outside."""
    return undistortion(calibration, camera)(image)


def depth_rel2depth_abs(raw: np.ndarray, calibration: NyuCalibration = NYU_CALIBRATION) -> np.ndarray:
    """Kinect disparity units to metres: ``351.3 / (1092.5 - raw)``, then > maxDepth -> maxDepth, < 0 -> 0.

    Args:
        raw: (H, W) raw depth, already in host byte order (the toolbox's ``swapbytes``), any real dtype.

    Returns:
        (H, W) float64 metres: raw >= 1093 (2047 = no return included) gives 0, raw 1058..1092 gives 10.
    """
    c = calibration
    with np.errstate(divide="ignore"):
        depth = c.depth_param1 / (c.depth_param2 - np.asarray(raw, dtype=np.float64))
    depth[depth > c.max_depth] = c.max_depth
    depth[depth < 0] = 0.0
    return depth


def project_depth_map(
    raw_depth: np.ndarray, rgb: np.ndarray, calibration: NyuCalibration = NYU_CALIBRATION
) -> tuple[np.ndarray, np.ndarray]:
    """``project_depth_map.m``: register raw Kinect depth to the RGB camera, undistort the RGB.

    Args:
        raw_depth: (H, W) uint16 raw depth in host byte order (little-endian PGM payload, 0..2047).
        rgb: (H, W, 3) uint8 RGB, the synced frame.
        calibration: the Kinect calibration; H and W must equal its size.

    Returns:
        ``(depth_m, rgb_undistorted)``: (H, W) float64 metres in the RGB camera (0 = no depth; the
        z-buffer keeps the nearest point; values are depth-camera depths, clipped to maxDepth), and the
        undistorted RGB, (H, W, 3) uint8.

    Raises:
        ValueError: shapes that differ from the calibration's size.
    """
    c = calibration
    h, w = c.height, c.width
    if raw_depth.shape != (h, w) or rgb.shape != (h, w, 3):
        raise ValueError(
            f"depth {raw_depth.shape} and RGB {rgb.shape} must be ({h}, {w}) and ({h}, {w}, 3) for this calibration"
        )
    und_rgb = undistortion(c, "rgb")
    rgb_undistorted = np.stack([und_rgb(rgb[..., i]) for i in range(3)], axis=-1)
    rgb_undistorted = np.clip(matlab_round(rgb_undistorted), 0, 255).astype(np.uint8)

    und_d = undistortion(c, "d")
    raw = np.asarray(raw_depth, dtype=np.float64)
    noise = und_d(255.0 * (raw == raw.max())) > 0
    depth_units = und_d(raw)
    depth_units[depth_units < 600] = 2047  # "fix issues introduced by distortion"
    depth_units[noise] = 2047
    depth2 = depth_rel2depth_abs(depth_units, c)

    # depth_plane2depth_world: 1-based pixel grid
    xx, yy = np.meshgrid(np.arange(1, w + 1, dtype=np.float64), np.arange(1, h + 1, dtype=np.float64))
    points = np.stack([(xx - c.cx_d) * depth2 / c.fx_d, (yy - c.cy_d) * depth2 / c.fy_d, depth2]).reshape(3, -1)
    # depth_world2rgb_world, rgb_world2rgb_plane
    points = c.rotation_matrix() @ points + c.translation()[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        x_proj = matlab_round(points[0] * c.fx_rgb / points[2] + c.cx_rgb)
        y_proj = matlab_round(points[1] * c.fy_rgb / points[2] + c.cy_rgb)
    good = (x_proj > 0) & (x_proj < w) & (y_proj > 0) & (y_proj < h)
    target = (y_proj[good].astype(np.int64) - 1) * w + (x_proj[good].astype(np.int64) - 1)
    # Z-buffer: the toolbox writes points far to near, so the nearest one at a pixel stays.
    out = np.full(h * w, np.inf)
    np.minimum.at(out, target, depth2.ravel()[good])
    out[np.isinf(out)] = 0.0
    out[out > c.max_depth] = c.max_depth
    out[out < 0] = 0.0
    out[np.isnan(out)] = 0.0
    return out.reshape(h, w), rgb_undistorted
