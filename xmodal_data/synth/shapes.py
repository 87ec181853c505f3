"""Solid primitives with analytic ray intersection, in their own local frame (metres, y up).

Every shape answers two vectorised questions:

* ``intersect(origin, dirs)``: ray parameter ``t`` of the first surface hit along ``origin + t * dirs``
  for ``origin`` (3,) and ``dirs`` (3, ...) (any length, not normalised), ``inf`` where the ray misses.
* ``normal(points)``: outward unit normals (3, n) at surface points (3, n).

Rays that start inside a solid hit its inside surface; scenes keep the camera outside all solids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Box", "Capsule", "Cone", "Cylinder", "Shape", "Sphere"]

_EPS = 1e-9
_SURFACE_TOL = 1e-6  # metres: how close to a cap plane a point must be to take the cap's normal


class Shape(Protocol):
    """What the renderer needs from a primitive."""

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray: ...

    def normal(self, points: np.ndarray) -> np.ndarray: ...

    def bounds(self) -> tuple[np.ndarray, float]:
        """Bounding sphere: (centre (3,) local metres, radius metres)."""
        ...


def _first_valid(*candidates: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Smallest positive ``t`` among (t, valid) candidates; inf where none is valid."""
    best = np.full(candidates[0][0].shape, np.inf)
    for t, valid in candidates:
        best = np.where(valid & (t > _EPS) & (t < best), t, best)
    return best


def _quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roots of ``a t^2 + 2 b t + c = 0`` (note the 2b): (t_minus, t_plus, real)."""
    disc = b * b - a * c
    real = (disc >= 0) & (a != 0)
    sq = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-b - sq) / a
        t2 = (-b + sq) / a
    return np.fmin(t1, t2), np.fmax(t1, t2), real


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=0), 1e-12)


@dataclass(frozen=True)
class Sphere:
    """Sphere of ``radius`` metres centred on the local origin."""

    radius: float

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        a = (dirs * dirs).sum(axis=0)
        b = np.tensordot(origin, dirs, axes=(0, 0))
        t1, t2, real = _quadratic_roots(a, b, float(origin @ origin) - self.radius**2)
        return _first_valid((t1, real), (t2, real))

    def normal(self, points: np.ndarray) -> np.ndarray:
        return _unit(points)

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.zeros(3), self.radius


@dataclass(frozen=True)
class Box:
    """Axis-aligned box centred on the local origin with half extents ``half`` (metres)."""

    half: tuple[float, float, float]

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        e = np.asarray(self.half).reshape((3,) + (1,) * (dirs.ndim - 1))
        o = origin.reshape(e.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1 = (-e - o) * inv
            t2 = (e - o) * inv
        near = np.fmin(t1, t2).max(axis=0)
        far = np.fmax(t1, t2).min(axis=0)
        hit = near <= far
        return _first_valid((near, hit), (far, hit))

    def normal(self, points: np.ndarray) -> np.ndarray:
        q = points / np.asarray(self.half)[:, None]
        axis = np.abs(q).argmax(axis=0)
        n = np.zeros_like(points)
        n[axis, np.arange(points.shape[1])] = np.sign(q[axis, np.arange(points.shape[1])])
        return n

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.zeros(3), float(np.linalg.norm(self.half))


@dataclass(frozen=True)
class Cylinder:
    """Upright closed cylinder: base disc at y = 0, top disc at y = ``height``."""

    radius: float
    height: float

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ox, oy, oz = origin
        dx, dy, dz = dirs
        t1, t2, real = _quadratic_roots(dx * dx + dz * dz, ox * dx + oz * dz, ox * ox + oz * oz - self.radius**2)
        candidates = [(t, real & (oy + t * dy >= 0) & (oy + t * dy <= self.height)) for t in (t1, t2)]
        with np.errstate(divide="ignore", invalid="ignore"):
            for cap_y in (0.0, self.height):
                t = (cap_y - oy) / dy
                candidates.append((t, (ox + t * dx) ** 2 + (oz + t * dz) ** 2 <= self.radius**2))
        return _first_valid(*candidates)

    def normal(self, points: np.ndarray) -> np.ndarray:
        x, y, z = points
        side = np.stack([x, np.zeros_like(y), z]) / self.radius
        up = np.where(y > self.height / 2, 1.0, -1.0)
        cap = np.stack([np.zeros_like(y), up, np.zeros_like(y)])
        on_cap = (np.abs(y) < _SURFACE_TOL) | (np.abs(y - self.height) < _SURFACE_TOL)
        return np.where(on_cap, cap, _unit(side))

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.array([0.0, self.height / 2, 0.0]), math.hypot(self.radius, self.height / 2)


@dataclass(frozen=True)
class Cone:
    """Upright closed cone: base disc of ``radius`` at y = 0, apex at y = ``height``."""

    radius: float
    height: float

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ox, oy, oz = origin
        dx, dy, dz = dirs
        k2 = (self.radius / self.height) ** 2
        w = self.height - oy
        t1, t2, real = _quadratic_roots(
            dx * dx + dz * dz - k2 * dy * dy, ox * dx + oz * dz + k2 * w * dy, ox * ox + oz * oz - k2 * w * w
        )
        candidates = [(t, real & (oy + t * dy >= 0) & (oy + t * dy <= self.height)) for t in (t1, t2)]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -oy / dy
        candidates.append((t, (ox + t * dx) ** 2 + (oz + t * dz) ** 2 <= self.radius**2))
        return _first_valid(*candidates)

    def normal(self, points: np.ndarray) -> np.ndarray:
        x, y, z = points
        k2 = (self.radius / self.height) ** 2
        side = _unit(np.stack([x, k2 * (self.height - y), z]))
        base = np.stack([np.zeros_like(y), -np.ones_like(y), np.zeros_like(y)])
        return np.where(np.abs(y) < _SURFACE_TOL, base, side)

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.array([0.0, self.height / 2, 0.0]), math.hypot(self.radius, self.height / 2)


@dataclass(frozen=True)
class Capsule:
    """Capsule along local x: the points within ``radius`` of the segment x in [-half_length, half_length]."""

    radius: float
    half_length: float

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ox, oy, oz = origin
        dx, dy, dz = dirs
        t1, t2, real = _quadratic_roots(dy * dy + dz * dz, oy * dy + oz * dz, oy * oy + oz * oz - self.radius**2)
        candidates = [(t, real & (np.abs(ox + t * dx) <= self.half_length)) for t in (t1, t2)]
        a = (dirs * dirs).sum(axis=0)
        for end in (-self.half_length, self.half_length):
            o = origin - np.array([end, 0.0, 0.0])
            b = np.tensordot(o, dirs, axes=(0, 0))
            s1, s2, ok = _quadratic_roots(a, b, float(o @ o) - self.radius**2)
            candidates += [(s1, ok), (s2, ok)]
        return _first_valid(*candidates)

    def normal(self, points: np.ndarray) -> np.ndarray:
        axis_point = np.zeros_like(points)
        axis_point[0] = np.clip(points[0], -self.half_length, self.half_length)
        return _unit(points - axis_point)

    def bounds(self) -> tuple[np.ndarray, float]:
        return np.zeros(3), self.half_length + self.radius
