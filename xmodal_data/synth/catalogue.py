"""The object classes of the synthetic dataset: their shapes (size ranges) and typical appearance.

Classes differ by shape first (what depth sees) and by a noisy hue + texture pattern (what RGB also sees).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xmodal_data.synth.scene import Part
from xmodal_data.synth.shapes import Box, Capsule, Cone, Cylinder, Sphere

__all__ = [
    "CLASS_STYLES",
    "CLUTTER_KINDS",
    "LOOK_NAMES",
    "SHAPE_CLASSES",
    "ClassStyle",
    "footprint_radius",
    "look_label",
    "sample_parts",
]


@dataclass(frozen=True)
class ClassStyle:
    """Typical look of a class: hue in degrees and albedo pattern."""

    hue: float
    pattern: str


def _sphere(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    r = s * rng.uniform(0.15, 0.32)
    return (Part(Sphere(r), (0.0, r, 0.0)),)


def _box(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    ex, ey, ez = s * rng.uniform(0.13, 0.38), s * rng.uniform(0.12, 0.38), s * rng.uniform(0.13, 0.38)
    return (Part(Box((ex, ey, ez)), (0.0, ey, 0.0)),)


def _cylinder(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    return (Part(Cylinder(s * rng.uniform(0.1, 0.25), s * rng.uniform(0.4, 1.0))),)


def _cone(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    return (Part(Cone(s * rng.uniform(0.18, 0.35), s * rng.uniform(0.45, 1.0))),)


def _capsule(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    r = s * rng.uniform(0.09, 0.18)
    return (Part(Capsule(r, s * rng.uniform(0.2, 0.45)), (0.0, r, 0.0)),)


def _table(rng: np.random.Generator, s: float) -> tuple[Part, ...]:
    hx, hz = s * rng.uniform(0.3, 0.6), s * rng.uniform(0.25, 0.45)
    thick, height, leg = s * rng.uniform(0.02, 0.035), s * rng.uniform(0.45, 0.8), s * rng.uniform(0.02, 0.035)
    top = Part(Box((hx, thick, hz)), (0.0, height - thick, 0.0))
    leg_h = (height - 2 * thick) / 2
    inset_x, inset_z = hx - 2 * leg, hz - 2 * leg
    legs = tuple(
        Part(Box((leg, leg_h, leg)), (sx * inset_x, leg_h, sz * inset_z)) for sx in (-1, 1) for sz in (-1, 1)
    )
    return (top, *legs)


_BUILDERS: dict[str, Callable[[np.random.Generator, float], tuple[Part, ...]]] = {
    "sphere": _sphere,
    "box": _box,
    "cylinder": _cylinder,
    "cone": _cone,
    "capsule": _capsule,
    "table": _table,
}

SHAPE_CLASSES: tuple[str, ...] = tuple(_BUILDERS)
"""Every class the generator can draw, in the default class order."""

CLASS_STYLES: dict[str, ClassStyle] = {
    "sphere": ClassStyle(hue=0.0, pattern="plain"),
    "box": ClassStyle(hue=215.0, pattern="checker"),
    "cylinder": ClassStyle(hue=125.0, pattern="bands"),
    "cone": ClassStyle(hue=50.0, pattern="stripes"),
    "capsule": ClassStyle(hue=285.0, pattern="plain"),
    "table": ClassStyle(hue=28.0, pattern="planks"),
}

LOOK_NAMES: dict[str, str] = {
    "sphere": "red-plain", "box": "blue-checker", "cylinder": "green-bands", "cone": "yellow-stripes",
    "capsule": "purple-plain", "table": "orange-planks",
}
"""A readable name for each class's look (hue + pattern), used by the ``shape_look`` label space."""


def look_label(shape: str, look: str) -> str:
    """The ``shape_look`` label of an object of class ``shape`` painted with class ``look``'s style, e.g.
    ``"cone/blue-checker"``."""
    return f"{shape}/{LOOK_NAMES[look]}"


CLUTTER_KINDS = ("sphere", "box", "cylinder")
"""Shapes used, shrunk, for unlabelled clutter."""


def sample_parts(kind: str, rng: np.random.Generator, scale: float = 1.0) -> tuple[Part, ...]:
    """Random parts of an object of class ``kind`` standing on y = 0, sizes multiplied by ``scale``.

    Raises:
        ValueError: unknown ``kind``.
    """
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown shape class {kind!r}; expected one of {SHAPE_CLASSES}") from None
    return builder(rng, scale)


def footprint_radius(parts: tuple[Part, ...]) -> float:
    """Radius (metres) around the object origin, in the floor plane, that contains all parts."""
    radii = []
    for part in parts:
        centre, radius = part.shape.bounds()
        c = centre + np.asarray(part.offset)
        radii.append(math.hypot(c[0], c[2]) + radius)
    return max(radii)
