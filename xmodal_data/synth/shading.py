"""Colour of ray-cast hits: procedural albedo textures and Lambertian shading (linear RGB, 0..1)."""

from __future__ import annotations

import numpy as np

from xmodal_data.synth.render import Hits
from xmodal_data.synth.scene import Light, Material, Scene

__all__ = ["albedo_image", "pattern_mix", "shade"]


def _cell_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell, cells (3, n) -> (n,)."""
    x = np.sin(cells[0] * 12.9898 + cells[1] * 78.233 + cells[2] * 37.719) * 43758.5453
    return x - np.floor(x)


def pattern_mix(points: np.ndarray, material: Material) -> np.ndarray:
    """Weight of ``material.colour2`` (n,) in [0, 1] at points (3, n) of the material's frame (metres)."""
    cells = np.floor(points / material.scale)
    match material.pattern:
        case "plain":
            return np.zeros(points.shape[1])
        case "stripes":
            return cells[0] % 2
        case "bands":
            return cells[1] % 2
        case "checker":
            return cells.sum(axis=0) % 2
        case "planks":  # boards along x, each a random shade, staggered joints
            boards = np.floor(points[2] / material.scale)
            joints = np.floor(points[0] / (6 * material.scale) + 0.37 * boards)
            return _cell_noise(np.stack([boards, joints, np.zeros_like(boards)]))
    raise ValueError(f"unknown pattern {material.pattern!r}")


def _albedo(points: np.ndarray, material: Material) -> np.ndarray:
    """Albedo (n, 3) at points (3, n) in the material's frame."""
    m = pattern_mix(points, material)[:, None]
    rgb = (1 - m) * np.asarray(material.colour) + m * np.asarray(material.colour2)
    if material.grain > 0:
        noise = _cell_noise(np.floor(points / (material.scale / 4)))
        rgb = rgb * (1 + material.grain * (noise[:, None] - 0.5))
    return np.clip(rgb, 0.0, 1.0)


def albedo_image(hits: Hits, scene: Scene) -> np.ndarray:
    """Per-pixel albedo (H, W, 3) float64 in [0, 1]; room textures are fixed to the world, object
    textures to the object (so they move with it). Pixels that hit nothing are 0."""
    out = np.zeros((*hits.depth.shape, 3))
    for s in np.unique(hits.surface):
        if s < 0:
            continue
        rows, cols = np.nonzero(hits.surface == s)
        points = hits.point[:, rows, cols]
        if s < hits.n_planes:
            material = scene.planes[s].material
        else:
            obj = scene.objects[s - hits.n_planes]
            material, points = obj.material, obj.pose.to_local(points)
        out[rows, cols] = _albedo(points, material)
    return out


def shade(albedo: np.ndarray, hits: Hits, light: Light) -> np.ndarray:
    """Lambertian radiance (H, W, 3) float64 in linear RGB (may exceed 1) from albedo (H, W, 3)."""
    lambert = np.maximum(np.tensordot(light.direction, hits.normal, axes=(0, 0)), 0.0)
    irradiance = (light.ambient + light.diffuse * lambert)[..., None] * light.colour
    return albedo * irradiance * light.exposure
