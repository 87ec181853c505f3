"""Rigid poses and rotations for the synthetic scenes.

World frame: metres, y up (gravity is -y), the floor is the plane y = 0.
Camera frame: OpenCV convention, x right, y down, z forward (the optical axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Pose", "camera_pose", "rot_x", "rot_y", "rot_z"]


def rot_x(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about x (right-handed), (3, 3) float64."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about y (right-handed), (3, 3) float64."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about z (right-handed), (3, 3) float64."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Pose:
    """A rigid frame: ``world = rotation @ local + position``.

    Attributes:
        rotation: (3, 3) float64, columns are the local axes in world coordinates.
        position: (3,) float64, the local origin in world coordinates (metres).
    """

    rotation: np.ndarray
    position: np.ndarray

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """World points (3, ...) -> local coordinates (3, ...)."""
        rel = points - self.position.reshape((3,) + (1,) * (points.ndim - 1))
        return np.einsum("ji,j...->i...", self.rotation, rel)

    def to_world_dirs(self, dirs: np.ndarray) -> np.ndarray:
        """Local directions (3, ...) -> world directions (3, ...)."""
        return np.einsum("ij,j...->i...", self.rotation, dirs)

    def to_local_dirs(self, dirs: np.ndarray) -> np.ndarray:
        """World directions (3, ...) -> local directions (3, ...)."""
        return np.einsum("ji,j...->i...", self.rotation, dirs)


# Camera axes (x right, y down, z forward) in world coordinates for a level camera looking along +z.
_LEVEL_CAMERA = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])


def camera_pose(position: np.ndarray, yaw: float, pitch_down: float, roll: float) -> Pose:
    """Pose of a camera (camera frame -> world).

    Args:
        position: (3,) camera centre in world metres.
        yaw: heading about the world y axis, radians (0 looks along world +z).
        pitch_down: tilt of the optical axis below the horizon, radians.
        roll: rotation about the optical axis, radians.
    """
    rotation = rot_y(yaw) @ _LEVEL_CAMERA @ rot_x(-pitch_down) @ rot_z(roll)
    return Pose(rotation=rotation, position=np.asarray(position, dtype=np.float64))
