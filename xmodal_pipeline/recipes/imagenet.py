"""The ImageNet networks a recipe needs, checked before its long stages, and torchvision's AlexNet as a trunk
checkpoint the detectors can start from.

torchvision's AlexNet (``features``: conv 11/4/2 -> 64, max-pool 3/2, conv 5/1/2 -> 192, max-pool, conv 3/1/1 ->
384, 256, 256, max-pool; floor-mode pools, no BatchNorm) is the layout of :class:`shared.nets.trunks.AlexNetTrunk`
with the widths (64, 192, 384, 256, 256), conv1 padding 2 and ``ceil_mode=False`` (:data:`TORCHVISION_ALEXNET`),
so its weights load into that trunk unchanged. Written as one of our checkpoints (``model`` with ``trunk.*`` keys
and the ``trunk`` description), it is what ``student-trainer detect --init copy-rgb --trunk-checkpoint`` needs to
train the RGB detector from ImageNet, as the paper's RGB rows do.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shared.nets.teachers import IMAGENET_MEAN, IMAGENET_STD, load_teacher
from shared.nets.trunks import AlexNetTrunk, TrunkSpec

__all__ = ["TORCHVISION_ALEXNET", "check_teacher_weights", "torchvision_alexnet_trunk", "write_alexnet_checkpoint"]

TORCHVISION_ALEXNET = TrunkSpec(
    name="alexnet-torchvision", conv1_kernel=11, conv1_stride=4, conv1_padding=2,
    channels=(64, 192, 384, 256, 256), batch_norm=False, ceil_mode=False,
)
# our trunk's convolution -> its index in torchvision's ``alexnet().features``
_CONV_INDEX = {"conv1.0": 0, "conv2.0": 3, "conv3.0": 6, "conv4.0": 8, "conv5.0": 10}


def check_teacher_weights(archs: Iterable[str], weights: str, seed: int = 0) -> None:
    """Load each teacher once, so missing ImageNet weights fail before hours of import.

    Raises:
        WeightsUnavailableError: the weights cannot be loaded (offline: the message names the file to place).
    """
    for arch in archs:
        load_teacher(arch, weights, seed)


def torchvision_alexnet_trunk(weights: str = "imagenet", seed: int = 0) -> AlexNetTrunk:
    """torchvision's AlexNet ``features`` (ImageNet or seeded random weights, exactly as ``teacher-server
    precompute --arch alexnet --weights W --seed S`` loads them) as an :class:`AlexNetTrunk`.

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be loaded (the message names the file to place).
    """
    features = load_teacher("alexnet", weights, seed).trunk
    trunk = AlexNetTrunk(TORCHVISION_ALEXNET)
    state = {f"{ours}.{param}": getattr(features[i], param).detach().clone()
             for ours, i in _CONV_INDEX.items() for param in ("weight", "bias")}
    trunk.load_state_dict(state, strict=True)
    return trunk.eval()


def write_alexnet_checkpoint(path: Path, weights: str = "imagenet", seed: int = 0) -> Path:
    """Write :func:`torchvision_alexnet_trunk` as an RGB trunk checkpoint (atomically); returns ``path``."""
    from student_trainer.checkpoint import save_checkpoint

    trunk = torchvision_alexnet_trunk(weights, seed)
    return save_checkpoint(path, {
        "model": {f"trunk.{k}": v for k, v in trunk.state_dict().items()},
        "trunk": trunk.describe(IMAGENET_MEAN, IMAGENET_STD),
        "modality": "rgb",
        "source": f"torchvision alexnet, weights {weights}" + (f" (seed {seed})" if weights == "random" else ""),
    })
