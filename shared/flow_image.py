"""The flow image (Gkioxari & Malik, "Finding Action Tubes", CVPR 2015): the format trainers read and flip.

Flow convention, stated once: ``flow[y, x] = (u, v)`` in pixels, the displacement of the content at pixel
``(x, y)`` of frame t to frame t+1: ``u`` positive = moving right, ``v`` positive = moving down (OpenCV's and
Middlebury's convention; frame t+1 sampled at ``(x + u, y + v)`` reproduces frame t).

A flow image stores ``(u, v, |flow|)`` as 8-bit channels ``x * 16 + 128`` rounded and clipped to 0..255:
levels 0..255 stand for -8..+7.94 pixels in 1/16 pixel steps (magnitude 0..7.94); larger flows saturate.
Computing flow (OpenCV DIS, ``.flo`` files) is a data tool: :mod:`xmodal_data.flow`.
"""

from __future__ import annotations

import numpy as np

from shared.errors import DataError

__all__ = ["check_flow", "encode_flow_image", "flip_flow", "flip_flow_image"]

_FLOW_SCALE = 16.0  # grey levels per pixel of flow
_FLOW_OFFSET = 128.0  # grey level of zero flow


def check_flow(flow: np.ndarray) -> np.ndarray:
    """``flow`` as an array; ValueError unless it is float (H, W, 2)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2) (u, v), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"flow must be float pixels, got dtype {flow.dtype}")
    return flow


def _quantise(x: np.ndarray) -> np.ndarray:
    # Round half to even (np.rint), not half up: levels are symmetric about 128 and 256 is even, so
    # negating u then quantising equals 256 minus the quantised u, ties included (see flip_flow_image).
    return np.clip(np.rint(x * _FLOW_SCALE + _FLOW_OFFSET), 0, 255).astype(np.uint8)


def encode_flow_image(flow: np.ndarray) -> np.ndarray:
    """Encode flow as an 8-bit 3-channel image, each channel ``round(x * 16 + 128)`` clipped to 0..255.

    Rounding is half to even (ties are 1/32-pixel flows), which keeps :func:`flip_flow_image` exact.

    Args:
        flow: (H, W, 2) float flow in pixels, (u, v).

    Returns:
        (H, W, 3) uint8: 0 = u, 1 = v, 2 = magnitude ``sqrt(u^2 + v^2)`` (so 128..255).

    Raises:
        ValueError: wrong shape or dtype.
        DataError: NaN or infinite flow.
    """
    flow = check_flow(flow).astype(np.float64)
    if not np.isfinite(flow).all():
        raise DataError(f"flow has {np.count_nonzero(~np.isfinite(flow))} NaN or infinite values; expected finite")
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    return _quantise(np.stack([flow[..., 0], flow[..., 1], magnitude], axis=-1))


def flip_flow(flow: np.ndarray) -> np.ndarray:
    """Flow of the horizontally mirrored frame pair: mirror the field left-right and negate u.

    Args:
        flow: (H, W, 2) float flow, (u, v) pixels.

    Returns:
        (H, W, 2) new array, same dtype.
    """
    flipped = check_flow(flow)[:, ::-1].copy()
    flipped[..., 0] *= -1
    return flipped


def flip_flow_image(image: np.ndarray) -> np.ndarray:
    """Horizontal flip of a flow image (:func:`encode_flow_image`), negating its u channel.

    A u level ``e`` in 1..254 becomes ``256 - e``; v and magnitude are only mirrored. The 8-bit range is
    not symmetric about 128 (levels stand for -8..+7.94 pixels), so the saturated ends swap instead:
    0 (u <= -7.97 px) becomes 255 and 255 (u > +7.906 px) becomes 0. The result then equals
    ``encode_flow_image(flip_flow(flow))`` at every pixel except where +7.906 < u < +7.969 before the flip
    (level 255 without saturating), which gives 0 where the direct encoding gives 1.

    Args:
        image: (H, W, 3) uint8 flow image (u, v, magnitude).

    Returns:
        (H, W, 3) uint8 new array.

    Raises:
        ValueError: not an (H, W, 3) uint8 image.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"flow image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    flipped = image[:, ::-1].copy()
    u = flipped[..., 0].astype(np.int16)
    flipped[..., 0] = np.where(u == 255, 0, np.clip(256 - u, 0, 255))
    return flipped
