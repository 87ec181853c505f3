"""Random scene descriptions: a room corner, a tilted camera, labelled objects, clutter and light.

All randomness comes from the ``rng`` passed in, so a scene is a pure function of its generator state.
World frame: metres, y up, floor y = 0; the camera stands near the origin looking roughly along +z.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from shared.camera import Intrinsics
from xmodal_data.synth.catalogue import CLASS_STYLES, CLUTTER_KINDS, SHAPE_CLASSES, footprint_radius, sample_parts
from xmodal_data.synth.geometry import Pose, camera_pose, rot_y
from xmodal_data.synth.scene import PATTERNS, Light, Material, Part, Plane, Scene, SceneObject

__all__ = ["Room", "sample_scene"]

_GAP = 0.04  # metres kept free between objects and between objects and walls
_DARK_PROB = 0.07  # objects painted near-black (the depth sensor loses them)


@dataclasses.dataclass(frozen=True)
class Room:
    """Axis-aligned room extents in world metres (the floor is y = 0)."""

    x_min: float
    x_max: float
    z_min: float
    z_max: float
    ceiling: float

    def contains(self, x: float, z: float, margin: float) -> bool:
        """True when the floor disc of radius ``margin`` at (x, z) is inside the walls."""
        return self.x_min + margin < x < self.x_max - margin and self.z_min + margin < z < self.z_max - margin


def _hsv(hue_deg: float, sat: float, val: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg / 360.0) % 1.0, float(np.clip(sat, 0, 1)), float(np.clip(val, 0, 1)))
    return (r, g, b)


def _room_planes(room: Room, rng: np.random.Generator) -> tuple[Plane, ...]:
    floor_pattern = str(rng.choice(["planks", "checker", "plain"]))
    floor_hue, floor_val = rng.uniform(15, 45), rng.uniform(0.25, 0.6)
    floor = Material(
        colour=_hsv(floor_hue, rng.uniform(0.1, 0.5), floor_val),
        colour2=_hsv(floor_hue + rng.uniform(-10, 10), rng.uniform(0.1, 0.5), floor_val * rng.uniform(0.5, 0.85)),
        pattern=floor_pattern,
        scale=rng.uniform(0.15, 0.4),
        grain=rng.uniform(0.1, 0.3),
    )
    wall_hue, wall_sat, wall_val = rng.uniform(0, 360), rng.uniform(0.0, 0.25), rng.uniform(0.55, 0.9)
    wall = Material(
        colour=_hsv(wall_hue, wall_sat, wall_val),
        colour2=_hsv(wall_hue, wall_sat, 0.85 * wall_val),
        pattern=str(rng.choice(["plain", "bands"], p=[0.8, 0.2])),
        scale=rng.uniform(0.3, 0.8),
        grain=rng.uniform(0.03, 0.1),
    )
    ceiling = Material(colour=(0.85, 0.85, 0.85), colour2=(0.85, 0.85, 0.85))
    e = np.eye(3)
    return (
        Plane(e[1], 0.0, floor),
        Plane(-e[1], -room.ceiling, ceiling),
        Plane(e[0], room.x_min, wall),
        Plane(-e[0], -room.x_max, wall),
        Plane(e[2], room.z_min, wall),
        Plane(-e[2], -room.z_max, wall),
    )


def _object_material(label: str, rng: np.random.Generator, shared_prob: float) -> tuple[Material, str]:
    """The object's material and the class whose look it took."""
    look = label
    if rng.random() < shared_prob:  # borrow another class's look, so colour alone cannot name the class
        others = [c for c in SHAPE_CLASSES if c != label]
        look = others[rng.integers(len(others))]
    style = CLASS_STYLES[look]
    hue, sat = style.hue + rng.uniform(-20, 20), rng.uniform(0.45, 0.9)
    val = rng.uniform(0.03, 0.08) if rng.random() < _DARK_PROB else rng.uniform(0.3, 0.85)
    return Material(
        colour=_hsv(hue, sat, val),
        colour2=_hsv(hue + rng.uniform(-10, 10), sat * rng.uniform(0.3, 0.8), val * rng.uniform(0.4, 0.7)),
        pattern=style.pattern,
        scale=rng.uniform(0.06, 0.14),
        grain=rng.uniform(0.0, 0.15),
    ), look


def _clutter_material(rng: np.random.Generator) -> Material:
    hue, val = rng.uniform(0, 360), rng.uniform(0.1, 0.9)
    return Material(
        colour=_hsv(hue, rng.uniform(0, 0.9), val),
        colour2=_hsv(hue + rng.uniform(-30, 30), rng.uniform(0, 0.9), val * rng.uniform(0.3, 0.8)),
        pattern=str(rng.choice(PATTERNS)),
        scale=rng.uniform(0.02, 0.06),
    )


def _place(
    parts: tuple[Part, ...],
    placed: list[tuple[float, float, float]],
    room: Room,
    camera: Pose,
    half_fov: float,
    distance: tuple[float, float],
    rng: np.random.Generator,
) -> Pose | None:
    """A random floor pose in view that keeps clear of walls and ``placed`` discs (x, z, r); None if none found."""
    radius = footprint_radius(parts)
    forward = camera.rotation[:, 2]
    heading = math.atan2(forward[0], forward[2])
    for _ in range(25):
        angle = heading + rng.uniform(-half_fov, half_fov)
        dist = rng.uniform(*distance)
        x, z = camera.position[0] + dist * math.sin(angle), camera.position[2] + dist * math.cos(angle)
        if not room.contains(x, z, radius + _GAP):
            continue
        if any(math.hypot(x - px, z - pz) < radius + pr + _GAP for px, pz, pr in placed):
            continue
        placed.append((x, z, radius))
        return Pose(rotation=rot_y(rng.uniform(0, 2 * math.pi)), position=np.array([x, 0.0, z]))
    return None


def sample_scene(
    rng: np.random.Generator,
    intrinsics: Intrinsics,
    classes: Sequence[str],
    n_objects: tuple[int, int],
    n_clutter: tuple[int, int],
    shared_appearance_prob: float,
) -> Scene:
    """A random room-corner scene seen by a camera with ``intrinsics``.

    Args:
        rng: the only source of randomness.
        intrinsics: camera (sets the field of view objects are placed in).
        classes: labels to draw objects from (uniformly).
        n_objects: inclusive range of labelled objects (fewer when the room is too crowded to place them).
        n_clutter: inclusive range of small unlabelled objects.
        shared_appearance_prob: chance that an object takes another class's hue and pattern.
    """
    room = Room(
        x_min=-rng.uniform(1.5, 4.5), x_max=rng.uniform(1.5, 4.5),
        z_min=-rng.uniform(0.8, 1.5), z_max=rng.uniform(3.5, 7.0), ceiling=rng.uniform(2.5, 3.0),
    )
    camera = camera_pose(
        np.array([rng.uniform(-0.3, 0.3), rng.uniform(1.0, 1.6), 0.0]),
        yaw=math.radians(rng.uniform(-35, 35)),
        pitch_down=math.radians(rng.uniform(8, 25)),
        roll=math.radians(rng.uniform(-4, 4)),
    )
    planes = _room_planes(room, rng)
    half_fov = 0.9 * math.atan(intrinsics.width / 2 / intrinsics.fx)
    placed: list[tuple[float, float, float]] = []
    objects: list[SceneObject] = []
    for _ in range(rng.integers(n_objects[0], n_objects[1] + 1)):
        label = classes[rng.integers(len(classes))]
        parts = sample_parts(label, rng)
        pose = _place(parts, placed, room, camera, half_fov, (1.6, 4.2), rng)
        if pose is not None:
            material, look = _object_material(label, rng, shared_appearance_prob)
            objects.append(SceneObject(label, pose, parts, material, look))
    for _ in range(rng.integers(n_clutter[0], n_clutter[1] + 1)):
        kind = CLUTTER_KINDS[rng.integers(len(CLUTTER_KINDS))]
        parts = sample_parts(kind, rng, scale=rng.uniform(0.2, 0.45))
        pose = _place(parts, placed, room, camera, 1.1 * half_fov, (1.2, 4.5), rng)
        if pose is not None:
            objects.append(SceneObject(None, pose, parts, _clutter_material(rng)))
    elevation, azimuth = math.radians(rng.uniform(30, 75)), rng.uniform(0, 2 * math.pi)
    light = Light(
        direction=np.array(
            [math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)]
        ),
        diffuse=rng.uniform(0.45, 0.95),
        ambient=rng.uniform(0.15, 0.4),
        colour=1.0 + rng.uniform(-0.08, 0.08, 3),
        exposure=rng.uniform(0.85, 1.25),
    )
    return Scene(camera=camera, planes=planes, objects=tuple(objects), light=light)
