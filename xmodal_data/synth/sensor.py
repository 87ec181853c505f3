"""Sensor models: an RGB camera (gamma, noise, 8-bit) and a Kinect-v1-like structured-light depth sensor.

The depth model follows how a Kinect fails: depth comes from disparity between the IR camera and a
projector ``baseline_m`` to its right, quantised to 1/8 pixel and noisy in disparity (so error grows
with depth squared); pixels the projector cannot see (shadows beside foreground edges), pixels at depth
discontinuities, dark (IR-absorbing) or grazing surfaces and pixels outside the range read 0 = missing.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KinectNoise", "kinect_depth", "rgb_camera"]


class KinectNoise(BaseModel):
    """Parameters of :func:`kinect_depth` (defaults: Kinect v1 at its native 640x480)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_m: float = Field(0.075, gt=0, description="IR camera to projector distance, metres")
    native_focal_px: float = Field(580.0, gt=0, description="focal length of the real sensor, its own pixels")
    disparity_noise_px: float = Field(0.08, ge=0, description="std of disparity noise, native pixels")
    disparity_step_px: float = Field(0.125, ge=0, description="disparity quantum, native pixels (0 = none)")
    min_range_m: float = Field(0.5, ge=0)
    max_range_m: float = Field(6.0, gt=0)
    edge_disparity_px: float = Field(
        1.5, gt=0, description="disparity jump (native pixels) that marks a depth discontinuity"
    )
    edge_drop_prob: float = Field(0.6, ge=0, le=1)
    grazing_cos: float = Field(0.12, ge=0, le=1, description="surfaces seen at |cos| below this are missing")
    dark_reflectance: float = Field(0.06, ge=0, le=1, description="albedo luminance below which IR fails")
    dark_drop_prob: float = Field(0.85, ge=0, le=1)
    dropout_prob: float = Field(0.002, ge=0, le=1, description="random isolated missing pixels")


def rgb_camera(radiance: np.ndarray, rng: np.random.Generator, noise_std: float = 0.01) -> np.ndarray:
    """Linear radiance (H, W, 3) -> uint8 sRGB-ish image (gamma 1/2.2, Gaussian noise of ``noise_std``)."""
    img = np.clip(radiance, 0.0, 1.0).astype(np.float32) ** np.float32(1 / 2.2)
    img += np.float32(noise_std) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.rint(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _projector_shadow(disparity: np.ndarray) -> np.ndarray:
    """Pixels the projector (to the camera's right) cannot see, from disparity (H, W) in image pixels.

    A pixel at column u lands on projector column ``u - d``; along a row, a pixel is occluded from the
    projector when some pixel to its right lands further left on the projector (a nearer surface).
    """
    proj = np.arange(disparity.shape[1], dtype=np.float64)[None, :] - disparity
    right_min = np.minimum.accumulate(proj[:, ::-1], axis=1)[:, ::-1]
    nearest_right = np.concatenate([right_min[:, 1:], np.full((proj.shape[0], 1), np.inf)], axis=1)
    return proj > nearest_right


def _discontinuities(disparity: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels beside a jump in disparity (H, W): |second difference| along rows or columns over ``threshold``.

    Disparity is linear in the pixel coordinates over any plane, so planes (however slanted or far) give
    zero; a crease gives a slope change; only a jump between surfaces gives a large value.
    """
    d = np.pad(disparity, 1, mode="edge")
    across = np.abs(d[1:-1, :-2] - 2 * d[1:-1, 1:-1] + d[1:-1, 2:])
    down = np.abs(d[:-2, 1:-1] - 2 * d[1:-1, 1:-1] + d[2:, 1:-1])
    return np.maximum(across, down) > threshold


def kinect_depth(
    depth: np.ndarray,
    cos_incidence: np.ndarray,
    reflectance: np.ndarray,
    fx: float,
    rng: np.random.Generator,
    params: KinectNoise,
) -> np.ndarray:
    """Raw Kinect-like depth from clean z-depth.

    Args:
        depth: (H, W) clean z-depth, metres (0 = nothing hit).
        cos_incidence: (H, W) |cos| of the viewing angle on the surface.
        reflectance: (H, W) albedo luminance in [0, 1] (a stand-in for IR reflectance).
        fx: focal length of the rendered image, pixels (sets the shadow widths).
        rng: the frame's noise generator.
        params: the sensor model.

    Returns:
        (H, W) float64 raw depth in metres, 0 where missing.
    """
    valid = depth > 0
    safe = np.where(valid, depth, np.inf)
    fb = params.native_focal_px * params.baseline_m  # disparity (native pixels) = fb / depth
    missing = ~valid | _projector_shadow(fx * params.baseline_m / safe)
    edge = _discontinuities(fb / safe, params.edge_disparity_px)
    missing |= edge & (rng.random(depth.shape) < params.edge_drop_prob)
    missing |= (reflectance < params.dark_reflectance) & (rng.random(depth.shape) < params.dark_drop_prob)
    missing |= cos_incidence < params.grazing_cos
    missing |= rng.random(depth.shape) < params.dropout_prob

    # Disparity noise and quantisation at the sensor's native resolution.
    disparity = fb / safe + rng.normal(0.0, params.disparity_noise_px, depth.shape)
    if params.disparity_step_px > 0:
        disparity = np.round(disparity / params.disparity_step_px) * params.disparity_step_px
    with np.errstate(divide="ignore"):
        raw = np.where(disparity > 0, fb / disparity, np.inf)
    missing |= (raw < params.min_range_m) | (raw > params.max_range_m)
    return np.where(missing, 0.0, raw)
