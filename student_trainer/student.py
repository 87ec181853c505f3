"""The student of supervision transfer: trunk + adaptation layer, its geometry, and its initialisations."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from shared.api import CollectionStats, ServiceInfo
from shared.nets.geometry import find_conv1_padding
from shared.nets.teachers import trunk_state
from shared.nets.trunks import AlexNetTrunk, TrunkSpec
from student_trainer.checkpoint import load_checkpoint

__all__ = ["TransferModel", "copy_rgb_weights", "student_spec_for", "target_geometry"]

log = logging.getLogger(__name__)


class TransferModel(nn.Module):
    """Student trunk (conv1..pool5) followed by the adaptation layer ``t``: 1x1 conv to teacher channels + ReLU."""

    def __init__(self, trunk: AlexNetTrunk, teacher_channels: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.adapter = nn.Sequential(nn.Conv2d(trunk.out_channels, teacher_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.trunk(x))


def target_geometry(info: ServiceInfo, dataset: str
                    ) -> tuple[tuple[int, int, int], tuple[int, int], CollectionStats, list[str]]:
    """Teacher map shape (C, h, w), teacher input size (H, W), statistics and views of ``dataset``'s collection.

    Raises:
        KeyError: the service holds no collection for the dataset (names the ones it has).
    """
    col = info.collections.get(dataset)
    if col is None:
        raise KeyError(f"teacher service has no collection {dataset!r} (it has {sorted(info.collections)}); "
                       "precompute it first")
    return col.shape, col.input_size, col.stats, col.views


def student_spec_for(spec: TrunkSpec, input_hw: tuple[int, int], target_hw: tuple[int, int]) -> TrunkSpec:
    """``spec`` with the conv1 padding whose pool5 matches the teacher's map (GeometryError if none does)."""
    pad = find_conv1_padding(lambda p: AlexNetTrunk(spec.with_(conv1_padding=p)), input_hw, target_hw,
                             preferred=spec.conv1_padding)
    return spec.with_(conv1_padding=pad)


def copy_rgb_weights(trunk: AlexNetTrunk, rgb_checkpoint: Path) -> int:
    """Copy an RGB trunk's weights into ``trunk`` wherever names and shapes agree ("copy from RGB").

    conv1 with another number of input channels gets the RGB filters averaged over colour and repeated.
    Returns the number of tensors copied.
    """
    src = trunk_state(load_checkpoint(rgb_checkpoint), rgb_checkpoint)
    dst = trunk.state_dict()
    copied = 0
    for name, value in dst.items():
        if name not in src:
            continue
        w = src[name]
        if name == "conv1.0.weight" and w.shape[1] != value.shape[1] and w.shape[0] == value.shape[0]:
            w = w.mean(dim=1, keepdim=True).repeat(1, value.shape[1], 1, 1)
        if w.shape == value.shape:
            dst[name] = w.clone()
            copied += 1
    if copied == 0:
        raise ValueError(f"no tensor of {rgb_checkpoint} matches the student trunk ({trunk.spec.name}, "
                         f"width {trunk.spec.width}); copy-rgb needs the same layout")
    trunk.load_state_dict(dst)
    log.info("copied %d of %d tensors from %s", copied, len(dst), rgb_checkpoint)
    return copied
