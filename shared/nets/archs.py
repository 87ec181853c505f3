"""The registry of teacher architectures: name -> torchvision model, ImageNet weights, layers a trunk can end at.

Torch-free, so the settings and ``--help`` derive their choices from it without importing torch; the trunks
are built by :func:`shared.nets.teachers.load_teacher`. A new torchvision teacher is one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CHECKPOINT", "TEACHER_ARCHS", "TORCHVISION_TEACHERS", "TeacherArch", "resolve_layer", "teacher_layers"]


@dataclass(frozen=True)
class TeacherArch:
    """A torchvision ImageNet CNN offered as a teacher.

    Attributes:
        model: the ``torchvision.models`` builder name (``torchvision.models.get_model_builder``).
        weights: its ImageNet weights as torchvision names them (``torchvision.models.get_weight``).
        layers: our layer name -> the last top-level child of the torchvision model the trunk keeps
            (the trunk is the model's children from the first up to that one).
        default_layer: the layer used when none is asked for.
    """

    model: str
    weights: str
    layers: Mapping[str, str]
    default_layer: str


TORCHVISION_TEACHERS: dict[str, TeacherArch] = {
    # `.features` is conv1 .. pool5 (stride 32).
    "alexnet": TeacherArch("alexnet", "AlexNet_Weights.IMAGENET1K_V1", {"pool5": "features"}, "pool5"),
    "vgg16": TeacherArch("vgg16", "VGG16_Weights.IMAGENET1K_V1", {"pool5": "features"}, "pool5"),
    # conv1 .. layer3 (1024 channels, stride 16) or .. layer4 (2048 channels, stride 32): a branched trunk.
    "resnet50": TeacherArch("resnet50", "ResNet50_Weights.IMAGENET1K_V1",
                            {"layer3": "layer3", "layer4": "layer4"}, "layer4"),
}
CHECKPOINT = "checkpoint"  # one of our own AlexNet-style trunk/detector checkpoints, always to pool5
TEACHER_ARCHS: tuple[str, ...] = (*sorted(TORCHVISION_TEACHERS), CHECKPOINT)


def teacher_layers(arch: str) -> tuple[str, ...]:
    """The layers a teacher of ``arch`` can end at. Raises ValueError for an unknown arch, listing the known."""
    if arch == CHECKPOINT:
        return ("pool5",)
    if arch not in TORCHVISION_TEACHERS:
        raise ValueError(f"unknown teacher arch {arch!r}; known: {list(TEACHER_ARCHS)}")
    return tuple(TORCHVISION_TEACHERS[arch].layers)


def resolve_layer(arch: str, layer: str | None) -> str:
    """``layer``, or the arch's default when None.

    Raises:
        ValueError: unknown arch, or a layer the arch does not have (listing the ones it has).
    """
    layers = teacher_layers(arch)
    if layer is None:
        return TORCHVISION_TEACHERS[arch].default_layer if arch in TORCHVISION_TEACHERS else layers[0]
    if layer not in layers:
        raise ValueError(f"teacher arch {arch!r} has no layer {layer!r}; its layers: {', '.join(layers)}")
    return layer
