"""Teacher trunks: torchvision ImageNet CNNs cut at a named layer (the registry is :mod:`shared.nets.archs`), or
our own checkpoints (to pool5).

A teacher is frozen and identified by :class:`TeacherIdentity` (architecture, layer, weights digest,
input normalisation); the feature store records it so a student never trains against features of a
different teacher than it thinks.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torchvision
from pydantic import BaseModel, ConfigDict
from torch import nn

from shared.errors import WeightsUnavailableError
from shared.identity import TeacherIdentity
from shared.modalities import IMAGENET_MEAN, IMAGENET_STD  # the RGB modality's normalisation
from shared.nets.archs import CHECKPOINT, TEACHER_ARCHS, TORCHVISION_TEACHERS, resolve_layer
from shared.nets.trunks import AlexNetTrunk, TrunkSpec

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TEACHER_ARCHS",
    "LoadedTeacher",
    "TeacherIdentity",
    "load_teacher",
    "trunk_state",
    "weights_digest",
]



class LoadedTeacher(BaseModel):
    """A frozen trunk plus its identity."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    trunk: nn.Module
    identity: TeacherIdentity


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes, in sorted name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _freeze(trunk: nn.Module) -> nn.Module:
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk


def _cut(model: nn.Module, last: str) -> nn.Module:
    """The model's top-level children from the first up to ``last``, as one Sequential keeping their names
    (``layer3.0.conv1.weight`` as in torchvision); a single child is itself, so AlexNet's and VGG16's
    ``.features`` keep their parameter names and weight digests."""
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    for name, child in model.named_children():
        kept[name] = child
        if name == last:
            return child if len(kept) == 1 else nn.Sequential(kept)
    raise ValueError(f"{type(model).__name__} has no child {last!r}")


def _torchvision_trunk(arch: str, layer: str, weights: str, seed: int) -> nn.Module:
    spec = TORCHVISION_TEACHERS[arch]
    builder = torchvision.models.get_model_builder(spec.model)
    if weights == "random":  # the untrained-teacher control: reproducible from the seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _cut(builder(weights=None), spec.layers[layer])
    if weights != "imagenet":
        raise ValueError(f"weights for {arch!r} must be 'imagenet', 'random' or a checkpoint path, got {weights!r}")
    enum = torchvision.models.get_weight(spec.weights)
    try:
        model = builder(weights=enum)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a corrupt download raises RuntimeError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
        raise WeightsUnavailableError(
            f"could not load torchvision's {enum} for {arch!r} ({type(e).__name__}: {e}). "
            f"This machine may be offline: download {enum.url} elsewhere and place it at {cache}, "
            "or pass a checkpoint file with --weights PATH."
        ) from e
    return _cut(model, spec.layers[layer])


def trunk_state(ckpt: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The trunk's state dict from one of our checkpoints (student, teacher or detector)."""
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"checkpoint {path} holds no state dict under 'model'")
    if any(k.startswith("trunk.") for k in state):
        state = {k[len("trunk."):]: v for k, v in state.items() if k.startswith("trunk.")}
    return state


def _checkpoint_trunk(path: Path) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...], str]:
    if not path.is_file():
        raise WeightsUnavailableError(f"teacher checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise WeightsUnavailableError(f"cannot read teacher checkpoint {path}: {type(e).__name__}: {e}") from e
    meta = ckpt.get("trunk") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "spec" not in meta:
        raise WeightsUnavailableError(
            f"checkpoint {path} has no 'trunk' description (spec, in_channels, mean, std); "
            "it was not written by this project's trainers"
        )
    trunk = AlexNetTrunk(TrunkSpec.model_validate(meta["spec"]), in_channels=int(meta.get("in_channels", 3)))
    state = trunk_state(ckpt, path)
    missing, _ = trunk.load_state_dict(state, strict=False)
    if missing:
        raise WeightsUnavailableError(f"checkpoint {path} lacks trunk weights {missing[:4]}...")
    return trunk, tuple(meta["mean"]), tuple(meta["std"]), meta["spec"]["name"]


def load_teacher(arch: str, weights: str = "imagenet", seed: int = 0, layer: str | None = None) -> LoadedTeacher:
    """Load a frozen teacher trunk (conv1 .. ``layer``).

    Args:
        arch: a torchvision teacher of :data:`shared.nets.archs.TORCHVISION_TEACHERS` (``alexnet``, ``vgg16``,
            ``resnet50``), or ``checkpoint`` (our own trunk/detector checkpoint).
        weights: ``imagenet`` / ``random`` for torchvision archs; a file path for ``checkpoint``.
        seed: initialises ``random`` weights reproducibly.
        layer: where the trunk ends (``pool5``; ``layer3`` / ``layer4`` for resnet50); None: the arch's default.
            Recorded in the identity.
    Raises:
        ValueError: unknown arch, or a layer the arch does not have.
        WeightsUnavailableError: weights cannot be downloaded or read; the message says what to do.
    """
    layer = resolve_layer(arch, layer)
    if arch == CHECKPOINT:
        path = Path(os.path.expanduser(weights))
        trunk, mean, std, spec_name = _checkpoint_trunk(path)
        arch, label = spec_name, str(path)
    else:
        trunk = _torchvision_trunk(arch, layer, weights, seed)
        mean, std, label = IMAGENET_MEAN, IMAGENET_STD, weights
    trunk = _freeze(trunk)
    # The last convolution registered: each trunk here ends in a conv block (ReLU/BN/pool keep the channels), and
    # ResNet's last bottleneck has no downsample branch, so its conv3 comes last (the tests check the forward).
    out_channels = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    identity = TeacherIdentity(
        arch=arch, layer=layer, weights=label, weights_digest=weights_digest(trunk),
        mean=mean, std=std, out_channels=out_channels,  # type: ignore[arg-type]
    )
    return LoadedTeacher(trunk=trunk, identity=identity)
