"""Scene descriptions: what the renderer draws, as plain immutable data (no randomness here).

A scene is a closed box-shaped room (floor y = 0, walls, ceiling), solid objects standing in it, one
directional light plus ambient light, and a camera pose. Objects with a ``label`` are the targets of
detection; objects without one are clutter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal_data.synth.geometry import Pose
from xmodal_data.synth.shapes import Shape

__all__ = ["PATTERNS", "Light", "Material", "Part", "Plane", "Scene", "SceneObject"]

PATTERNS = ("plain", "stripes", "bands", "checker", "planks")
"""Procedural albedo patterns; see :func:`xmodal_data.synth.shading.pattern_mix`."""


@dataclass(frozen=True)
class Material:
    """Surface appearance: two linear-RGB albedos (0..1) mixed by a pattern of period ``scale`` metres.

    ``grain`` is the amplitude of a fixed cell noise (cells of ``scale / 4``) that gives flat
    surfaces some texture; the pattern lives in the object's own frame, so it moves with the object.
    """

    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    pattern: str = "plain"
    scale: float = 0.1
    grain: float = 0.0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        if self.scale <= 0:
            raise ValueError(f"pattern scale must be > 0 metres, got {self.scale}")


@dataclass(frozen=True)
class Part:
    """One primitive of an object, its local origin at ``offset`` (metres) in the object frame."""

    shape: Shape
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class SceneObject:
    """A rigid object: parts in its frame, placed by ``pose``; ``label`` None marks clutter. ``look`` is the class
    whose hue and pattern its material took (its own class, or another one's for shared appearance; None for
    clutter)."""

    label: str | None
    pose: Pose
    parts: tuple[Part, ...]
    material: Material
    look: str | None = None


@dataclass(frozen=True, eq=False)
class Plane:
    """Room surface ``normal . p = offset`` (world metres), ``normal`` (3,) unit, pointing into the room."""

    normal: np.ndarray
    offset: float
    material: Material


@dataclass(frozen=True, eq=False)
class Light:
    """Directional + ambient light.

    Attributes:
        direction: (3,) unit world vector pointing towards the light.
        diffuse: directional intensity; ``ambient``: ambient intensity.
        colour: (3,) RGB multipliers of both lights; ``exposure``: global gain of the camera.
    """

    direction: np.ndarray
    diffuse: float
    ambient: float
    colour: np.ndarray
    exposure: float = 1.0


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything one frame renders: camera (camera frame -> world), room planes, objects, light."""

    camera: Pose
    planes: tuple[Plane, ...]
    objects: tuple[SceneObject, ...]
    light: Light

    @property
    def labels(self) -> list[str | None]:
        """Label of each object (None for clutter), in ``objects`` order."""
        return [o.label for o in self.objects]
