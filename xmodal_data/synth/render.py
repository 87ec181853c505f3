"""Vectorised ray casting of a :class:`~xmodal_data.synth.scene.Scene`: geometry only (no colour).

One ray per pixel centre: pixel (row v, column u), 0-based, looks along the camera direction
``((u - cx) / fx, (v - cy) / fy, 1)``. Because that direction has unit z in the camera frame, the ray
parameter of a hit *is* its z-depth (metres), not the distance along the ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.camera import Intrinsics
from xmodal_data.synth.geometry import Pose
from xmodal_data.synth.scene import Scene

__all__ = ["Hits", "camera_rays", "cast_rays", "ray_depths"]


@dataclass(frozen=True, eq=False)
class Hits:
    """Per-pixel result of ray casting a scene (H x W image).

    Attributes:
        depth: (H, W) float64 z-depth in metres, 0 where the ray hits nothing.
        surface: (H, W) int16: index of the visible surface, room planes first (``0 .. n_planes-1``),
            then objects (``n_planes + object index``); -1 where nothing is hit.
        normal: (3, H, W) float64 unit world normals facing the camera (0 where nothing is hit).
        point: (3, H, W) float64 world points of the hits (metres).
        cos_incidence: (H, W) float64 |cos| of the angle between the ray and the normal.
        amodal: (n_objects,) int64 pixels each object would cover alone in the image (occluders removed).
        n_planes: number of room planes.
    """

    depth: np.ndarray
    surface: np.ndarray
    normal: np.ndarray
    point: np.ndarray
    cos_incidence: np.ndarray
    amodal: np.ndarray
    n_planes: int

    @property
    def instance(self) -> np.ndarray:
        """(H, W) int16 index into ``scene.objects`` of the visible object, -1 for room or nothing."""
        return np.where(self.surface >= self.n_planes, self.surface - self.n_planes, -1).astype(np.int16)


def camera_rays(intrinsics: Intrinsics) -> np.ndarray:
    """Camera-frame ray directions with unit z, (3, H, W) float64."""
    u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)])


def _screen_bounds(
    centre: np.ndarray, radius: float, camera: Pose, intrinsics: Intrinsics
) -> tuple[float, float, float, float] | None:
    """Pixel-coordinate bounds (u0, u1, v0, v1) of a sphere's image (world centre, radius); None if behind.

    Infinite bounds when the sphere reaches the camera plane (it may cover any pixel).
    """
    x, y, z = camera.to_local(centre)
    if z + radius <= 0:
        return None
    if z - radius <= 1e-3:
        return -math.inf, math.inf, -math.inf, math.inf
    # Over the sphere's bounding box x/z and y/z are monotonic in each coordinate: corners bound them.
    xs = [(x + sx) / (z + sz) for sx in (-radius, radius) for sz in (-radius, radius)]
    ys = [(y + sy) / (z + sz) for sy in (-radius, radius) for sz in (-radius, radius)]
    u0, u1 = intrinsics.cx + intrinsics.fx * min(xs), intrinsics.cx + intrinsics.fx * max(xs)
    v0, v1 = intrinsics.cy + intrinsics.fy * min(ys), intrinsics.cy + intrinsics.fy * max(ys)
    return u0, u1, v0, v1


def _screen_rect(
    centre: np.ndarray, radius: float, camera: Pose, intrinsics: Intrinsics
) -> tuple[slice, slice] | None:
    """Rows/columns whose pixel centres may see a sphere (world centre, radius); None if none can."""
    bounds = _screen_bounds(centre, radius, camera, intrinsics)
    if bounds is None:
        return None
    h, w = intrinsics.height, intrinsics.width
    u0, u1, v0, v1 = bounds
    if not math.isfinite(u0):
        return slice(0, h), slice(0, w)
    c0, c1 = max(0, math.ceil(u0)), min(w, math.floor(u1) + 1)
    r0, r1 = max(0, math.ceil(v0)), min(h, math.floor(v1) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


_Region = Callable[[np.ndarray, float], tuple | None]
"""(world centre, radius) of a bounding sphere -> index into the ray array of the rays that may hit it."""


def _trace(
    scene: Scene, dirs: np.ndarray, region_of: _Region
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]], np.ndarray]:
    """Closest hit along rays from the camera centre with world directions ``dirs`` (3, ...).

    Returns:
        t_best (...) float64 ray parameter of the closest hit (inf: none); prim (...) int32 index into the
        table of (surface index, object index or -1, part index or -1), -1 where nothing is hit; the table;
        amodal (n_objects,) int64 rays that hit each object ignoring the others.
    """
    shape = dirs.shape[1:]
    origin = scene.camera.position
    t_best = np.full(shape, np.inf)
    prim = np.full(shape, -1, dtype=np.int32)
    table: list[tuple[int, int, int]] = []

    for i, plane in enumerate(scene.planes):
        denom = np.tensordot(plane.normal, dirs, axes=(0, 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (plane.offset - float(plane.normal @ origin)) / denom
        closer = (t > 1e-9) & (t < t_best)
        t_best[closer], prim[closer] = t[closer], len(table)
        table.append((i, -1, -1))

    n_planes = len(scene.planes)
    amodal = np.zeros(len(scene.objects), dtype=np.int64)
    for k, obj in enumerate(scene.objects):
        seen = np.zeros(shape, dtype=bool)
        local_origin = obj.pose.to_local(origin)
        for j, part in enumerate(obj.parts):
            centre, radius = part.shape.bounds()
            region = region_of(obj.pose.rotation @ (centre + part.offset) + obj.pose.position, radius)
            if region is None:
                continue
            local_dirs = obj.pose.to_local_dirs(dirs[(slice(None), *region)])
            t = part.shape.intersect(local_origin - np.asarray(part.offset), local_dirs)
            seen[region] |= np.isfinite(t)
            best = t_best[region]
            closer = t < best
            t_best[region] = np.where(closer, t, best)
            prim[region] = np.where(closer, len(table), prim[region])
            table.append((n_planes + k, k, j))
        amodal[k] = seen.sum()
    return t_best, prim, table, amodal


def ray_depths(scene: Scene, intrinsics: Intrinsics, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Z-depth of the closest surface along the rays through sub-pixel positions of ``scene``'s camera.

    The depth buffer of :func:`cast_rays` evaluated at any position, not only at pixel centres.

    Args:
        scene: what to ray cast.
        intrinsics: its camera.
        u, v: (N,) float pixel coordinates (column, row; 0-based, pixel centres at integers).

    Returns:
        (N,) float64 z-depth in metres, inf where the ray hits nothing.
    """
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    rays = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)])
    dirs = scene.camera.to_world_dirs(rays)

    def region_of(centre: np.ndarray, radius: float) -> tuple[np.ndarray] | None:
        bounds = _screen_bounds(centre, radius, scene.camera, intrinsics)
        if bounds is None:
            return None
        u0, u1, v0, v1 = bounds
        inside = (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
        return (inside,) if inside.any() else None

    return _trace(scene, dirs, region_of)[0]


def cast_rays(scene: Scene, intrinsics: Intrinsics) -> Hits:
    """Ray cast ``scene`` through a pinhole camera with ``intrinsics``; see :class:`Hits`."""
    h, w = intrinsics.height, intrinsics.width
    origin = scene.camera.position
    dirs = scene.camera.to_world_dirs(camera_rays(intrinsics))
    t_best, prim, table, amodal = _trace(
        scene, dirs, lambda centre, radius: _screen_rect(centre, radius, scene.camera, intrinsics)
    )
    n_planes = len(scene.planes)

    hit = prim >= 0
    depth = np.where(hit, t_best, 0.0)
    point = origin[:, None, None] + dirs * depth
    normal = np.zeros((3, h, w))
    surface = np.full((h, w), -1, dtype=np.int16)
    for p, (s, k, j) in enumerate(table):
        rows, cols = np.nonzero(prim == p)
        if rows.size == 0:
            continue
        surface[rows, cols] = s
        if k < 0:
            normal[:, rows, cols] = scene.planes[s].normal[:, None]
            continue
        obj, part = scene.objects[k], scene.objects[k].parts[j]
        local = obj.pose.to_local(point[:, rows, cols]) - np.asarray(part.offset)[:, None]
        normal[:, rows, cols] = obj.pose.to_world_dirs(part.shape.normal(local))
    # Normals face the camera (solids are seen from outside, planes from inside the room).
    facing = (normal * dirs).sum(axis=0)
    normal *= np.where(facing > 0, -1.0, 1.0)
    cos_incidence = np.abs(facing) / np.linalg.norm(dirs, axis=0)
    return Hits(
        depth=depth, surface=surface, normal=normal, point=point, cos_incidence=cos_incidence,
        amodal=amodal, n_planes=n_planes,
    )
