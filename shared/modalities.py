"""The modality registry: everything a component needs to know about an input modality, in one place.

A :class:`Modality` names the manifest field holding its image, the field it is encoded from, its default splits
(transfer pairs; detector train and test), how its uint8 (H, W, 3) images become network input (normalisation) and
how one is mirrored left-right *exactly* (a flow image negates u; where the encoding itself is not
mirror-equivariant, as DIS flow is not, ``mirror_field`` names an image computed from the mirrored inputs). Settings
derive their choices from here (:func:`names`), so registering a modality is the one step to add one; the image
encoder for ``xmodal-data encode`` lives with the data tools (``xmodal_data/encode.py``).

This module imports neither torch nor OpenCV (settings import it while building ``--help``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.flow_image import flip_flow_image

if TYPE_CHECKING:
    import torch

    from shared.manifest import FrameRecord

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Modality", "modality", "names", "register_modality"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mirror_image(img: np.ndarray) -> np.ndarray:
    """Plain left-right mirror of an (H, W, C) image (RGB, HHA and other images of scalar fields)."""
    return np.ascontiguousarray(img[:, ::-1])


def _read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    from shared.imageio import read_rgb  # OpenCV only when an image is read

    return read_rgb(path)


@dataclass(frozen=True)
class Modality:
    """One input modality.

    Attributes:
        name: its name in settings, run folders and checkpoints (``rgb``, ``hha``, ``flow``).
        manifest_field: the :class:`~shared.manifest.FrameRecord` field holding its image path.
        encoded_from: the field its image is computed from (``depth`` for HHA, ``rgb_next`` for flow), or None.
        transfer_split: default split of its supervision-transfer pairs; None for a modality that is never a student
            (RGB, the teacher's own).
        train_split, test_split: default detector splits.
        val_split: default labelled split that no detector trains or is tested on, where choices such as the
            late-fusion weight are made (None: the modality's datasets have none).
        mean, std: per-channel normalisation of ``x / 255``.
        flip: exact left-right mirror of a uint8 (H, W, 3) image of this modality.
        mirror_field: a field holding the image of the mirrored inputs, used instead of ``flip`` where present.
        read: reads an image file as uint8 (H, W, 3) (default: the RGB reader).
    """

    name: str
    manifest_field: str
    encoded_from: str | None
    transfer_split: str | None
    train_split: str
    test_split: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: Callable[[np.ndarray], np.ndarray] = mirror_image
    mirror_field: str | None = None
    read: Callable[[str | os.PathLike[str]], np.ndarray] = _read_rgb
    val_split: str | None = None

    @property
    def student(self) -> bool:
        """True when it can be a supervision-transfer student (it has transfer pairs)."""
        return self.transfer_split is not None

    def image_path(self, frame: FrameRecord, mirrored: bool = False) -> str | None:
        """The manifest path of the frame's image (of the mirrored inputs when ``mirrored`` and recorded)."""
        if mirrored and self.mirror_field is not None and getattr(frame, self.mirror_field, None):
            return getattr(frame, self.mirror_field)
        return getattr(frame, self.manifest_field, None)

    def to_tensor(self, img: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> normalised float32 (3, H, W)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records of its input modality."""
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}


_REGISTRY: dict[str, Modality] = {}


def register_modality(m: Modality) -> Modality:
    """Add a modality (a new one, or one replacing a registered name). Returns it."""
    _REGISTRY[m.name] = m
    return m


def modality(name: str) -> Modality:
    """The registered modality ``name``. Raises ValueError quoting an unknown name and listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; known: {sorted(_REGISTRY)}") from None


def names(students_only: bool = False) -> list[str]:
    """Registered modality names (in registration order), optionally only those that can be students."""
    return [n for n, m in _REGISTRY.items() if m.student or not students_only]


# ImageNet statistics: torchvision teachers expect them; our RGB teachers use them too.
register_modality(Modality("rgb", "rgb", None, None, "rgb_train", "depth_test", IMAGENET_MEAN, IMAGENET_STD,
                           val_split="depth_val"))
# HHA channels span 0..255 with broad histograms; centre and scale them like images.
register_modality(Modality("hha", "hha", "depth", "depth_transfer", "depth_train", "depth_test", (0.5, 0.5, 0.5),
                           (0.25, 0.25, 0.25), val_split="depth_val"))
# Flow images are centred at 128 by construction; typical |flow| of a few pixels is ~+-0.15 after /255. DIS is not
# mirror-equivariant: the flow image of the mirrored pair (``flow_mirror``) is the exact mirrored input.
register_modality(Modality("flow", "flow", "rgb_next", "flow_transfer", "flow_train", "flow_test", (128 / 255,) * 3,
                           (0.125, 0.125, 0.125), flip=flip_flow_image, mirror_field="flow_mirror",
                           val_split="flow_val"))
