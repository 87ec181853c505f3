"""Named input recipes for the modalities (rgb, hha, flow): channels, normalisation, flipping.

Images arrive as uint8 (H, W, 3). ``to_tensor`` gives float32 (3, H, W) normalised as
``(x / 255 - mean) / std``. A horizontal flip of a flow image must negate u (channel 0), which for
the ``x*16 + 128`` encoding is ``256 - x`` (clipped); HHA and RGB flip plainly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PRESETS", "ModalityPreset", "preset"]


@dataclass(frozen=True)
class ModalityPreset:
    """How one modality's uint8 images become network input."""

    name: str
    manifest_field: str  # the FrameRecord field holding this modality's image path
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    negate_u_on_flip: bool = False

    def flip(self, img: np.ndarray) -> np.ndarray:
        """Horizontal flip of a uint8 (H, W, 3) image; flow images get u negated around 128."""
        out = np.ascontiguousarray(img[:, ::-1])
        if self.negate_u_on_flip:
            out[..., 0] = np.clip(256 - out[..., 0].astype(np.int16), 0, 255).astype(np.uint8)
        return out

    def to_tensor(self, img: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalised float32 (3, H, W)."""
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


PRESETS: dict[str, ModalityPreset] = {
    # ImageNet statistics: torchvision teachers expect them; our RGB teachers use them too.
    "rgb": ModalityPreset("rgb", "rgb", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # HHA channels span 0..255 with broad histograms; centre and scale them like images.
    "hha": ModalityPreset("hha", "hha", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    # Flow images are centred at 128 by construction; typical |flow| of a few pixels is ~+-0.15 after /255.
    "flow": ModalityPreset("flow", "flow", (128 / 255,) * 3, (0.125, 0.125, 0.125), negate_u_on_flip=True),
}


def preset(name: str) -> ModalityPreset:
    """The named preset. Raises ValueError quoting an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; known: {sorted(PRESETS)}") from None
