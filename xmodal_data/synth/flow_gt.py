"""Ground-truth optical flow of a synthetic clip, from the renderer's exact geometry and motion.

Forward flow t -> t+1 at every pixel of frame t: the 3-D point the pixel sees at t is moved by its object's
rigid motion (room surfaces and clutter do not move) and projected into the camera at t+1; the flow is the
displacement of its projection, in the convention of :mod:`shared.flow_image` (u right, v down, pixels).
Each pixel also gets a visibility code: the moved point may leave the frame, or be hidden in frame t+1 by a
surface in front of it (found by ray casting frame t+1's scene at the exact landing position and comparing
depths), and a ray that hit nothing at t has no flow at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.camera import Intrinsics
from shared.errors import DataError, ImageReadError
from xmodal_data.synth.render import Hits, ray_depths
from xmodal_data.synth.scene import Scene

__all__ = [
    "DEPTH_TOLERANCE",
    "HIDDEN",
    "NO_SURFACE",
    "OCCLUSION_CODES",
    "OUT_OF_VIEW",
    "VISIBLE",
    "GroundTruthFlow",
    "ground_truth_flow",
    "moved_points",
    "read_occlusion",
]

VISIBLE, HIDDEN, OUT_OF_VIEW, NO_SURFACE = 0, 1, 2, 3
OCCLUSION_CODES = {
    VISIBLE: "visible at t+1",
    HIDDEN: "hidden at t+1 behind another surface (or the object's own front)",
    OUT_OF_VIEW: "leaves the frame at t+1 (or passes behind the camera)",
    NO_SURFACE: "no surface seen at t: flow undefined (stored as 0)",
}
"""The uint8 values of an occlusion map and what they mean; any non-zero value is "not visible"."""

DEPTH_TOLERANCE = 1e-4
"""Relative depth margin of the visibility test: hidden iff the first surface along the t+1 ray through the
landing position is closer than ``(1 - DEPTH_TOLERANCE) * z``. It only absorbs rounding of the ray-surface
intersections (0.3 mm at 3 m): the comparison is made at the exact landing position, not on the pixel grid."""

_MIN_Z = 1e-6  # metres: a moved point at or behind the camera plane of t+1 has no projection


@dataclass(frozen=True, eq=False)
class GroundTruthFlow:
    """Exact flow of one clip.

    Attributes:
        flow: (H, W, 2) float32 forward flow t -> t+1, (u, v) pixels; 0 where ``occlusion == NO_SURFACE``.
        occlusion: (H, W) uint8 visibility codes (:data:`OCCLUSION_CODES`).
    """

    flow: np.ndarray
    occlusion: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool: pixels whose point is visible in frame t+1 (where a flow estimate can be judged)."""
        return self.occlusion == VISIBLE


def moved_points(scene: Scene, next_scene: Scene, hits: Hits) -> np.ndarray:
    """World points seen at t, each moved by its surface's rigid motion from ``scene`` to ``next_scene``.

    Args:
        scene, next_scene: the clip's two scenes; objects correspond by index, room planes are static.
        hits: ray casting of ``scene``.

    Returns:
        (3, H, W) float64 world metres at t+1 (room points and pixels without a hit unchanged).

    Raises:
        ValueError: the scenes hold different numbers of objects.
    """
    if len(scene.objects) != len(next_scene.objects):
        raise ValueError(
            f"scenes hold {len(scene.objects)} and {len(next_scene.objects)} objects; a clip keeps its objects"
        )
    moved = hits.point.copy()
    instance = hits.instance
    for k, (before, after) in enumerate(zip(scene.objects, next_scene.objects, strict=True)):
        rows, cols = np.nonzero(instance == k)
        if rows.size == 0:
            continue
        local = before.pose.to_local(hits.point[:, rows, cols])
        moved[:, rows, cols] = after.pose.rotation @ local + after.pose.position[:, None]
    return moved


def ground_truth_flow(
    scene: Scene, hits: Hits, next_scene: Scene, intrinsics: Intrinsics, depth_tolerance: float = DEPTH_TOLERANCE
) -> GroundTruthFlow:
    """Exact forward flow and visibility of a clip (scene at t with its ray casting, scene at t+1).

    Args:
        scene, hits: frame t and its ray casting (``hits.point`` are the points seen).
        next_scene: frame t+1 (camera and object poses may all differ).
        intrinsics: the camera of both frames.
        depth_tolerance: see :data:`DEPTH_TOLERANCE`.

    Returns:
        The flow and the occlusion codes.
    """
    h, w = intrinsics.height, intrinsics.width
    local = next_scene.camera.to_local(moved_points(scene, next_scene, hits))
    x, y, z = local
    hit = hits.depth > 0
    ahead = hit & (z > _MIN_Z)
    safe_z = np.where(ahead, z, 1.0)
    u1 = np.where(ahead, intrinsics.cx + intrinsics.fx * x / safe_z, 0.0)
    v1 = np.where(ahead, intrinsics.cy + intrinsics.fy * y / safe_z, 0.0)
    rows, cols = np.mgrid[0:h, 0:w]
    flow = np.stack([np.where(ahead, u1 - cols, 0.0), np.where(ahead, v1 - rows, 0.0)], axis=-1)

    inside = ahead & (u1 >= -0.5) & (u1 < w - 0.5) & (v1 >= -0.5) & (v1 < h - 0.5)
    occlusion = np.full((h, w), OUT_OF_VIEW, dtype=np.uint8)
    occlusion[~hit] = NO_SURFACE
    first = ray_depths(next_scene, intrinsics, u1[inside], v1[inside])
    occlusion[inside] = np.where(first < (1.0 - depth_tolerance) * z[inside], HIDDEN, VISIBLE)
    return GroundTruthFlow(flow=flow.astype(np.float32), occlusion=occlusion)


def read_occlusion(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an occlusion PNG (the manifest's ``flow_occlusion``).

    Returns:
        (H, W) uint8 codes of :data:`OCCLUSION_CODES`.

    Raises:
        ImageReadError: missing or undecodable file.
        DataError: not a single-channel 8-bit image, or a value that is no code (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"occlusion map {p} does not exist")
    data = np.fromfile(p, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"occlusion map {p} is empty, truncated or not a decodable image ({data.size} bytes)")
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DataError(f"occlusion map {p} is {image.dtype} {image.shape}, expected a single-channel 8-bit PNG")
    if image.max(initial=0) > max(OCCLUSION_CODES):
        raise DataError(f"occlusion map {p} holds value {image.max()}; codes are {sorted(OCCLUSION_CODES)}")
    return image
