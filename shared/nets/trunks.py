"""AlexNet-style trunks ``conv1 .. pool5``: the student of the paper, and the small CPU-sized variant.

The layer layout follows CaffeNet/AlexNet (5 convolutions, max-pooling after conv1, conv2 and conv5).
Pooling defaults to Caffe's ceil mode, which the paper's released models used; with it the VGG16 ->
AlexNet student matches VGG's 7x7 pool5 at 224x224 with conv1 padding 7, as in the released model.
``conv5`` (stride 16 with the AlexNet spec) is what Fast R-CNN's RoI pooling reads; ``pool5`` is what
supervision transfer regresses.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.nets.specs import TRUNK_SPECS, TrunkSpec, trunk_spec

__all__ = ["TRUNK_SPECS", "AlexNetTrunk", "TrunkSpec", "trunk_spec"]


def _conv(cin: int, cout: int, k: int, s: int, p: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class AlexNetTrunk(nn.Module):
    """``conv1 .. pool5`` of an AlexNet-style network.

    ``forward(x)`` returns pool5, shape (N, C5, H5, W5); ``conv5(x)`` returns the conv5 map (before pool5).
    Module names (``conv1`` .. ``conv5``, ``pool1`` ...) stay stable so checkpoints and weight copying work.
    """

    def __init__(self, spec: TrunkSpec, in_channels: int = 3) -> None:
        super().__init__()
        self.spec, self.in_channels = spec, in_channels
        c1, c2, c3, c4, c5 = spec.widths()
        bn, cm = spec.batch_norm, spec.ceil_mode
        self.conv1 = nn.Sequential(
            *_conv(in_channels, c1, spec.conv1_kernel, spec.conv1_stride, spec.conv1_padding, bn)
        )
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=cm)
        self.conv2 = nn.Sequential(*_conv(c1, c2, 5, 1, 2, bn))
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=cm)
        self.conv3 = nn.Sequential(*_conv(c2, c3, 3, 1, 1, bn))
        self.conv4 = nn.Sequential(*_conv(c3, c4, 3, 1, 1, bn))
        self.conv5 = nn.Sequential(*_conv(c4, c5, 3, 1, 1, bn))
        self.pool5 = nn.MaxPool2d(3, 2, ceil_mode=cm)
        self.out_channels = c5
        self.conv5_stride = spec.conv1_stride * 4
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def describe(self, mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, object]:
        """The ``trunk`` entry of a checkpoint: enough to rebuild this trunk and normalise its input."""
        return {"spec": self.spec.model_dump(), "in_channels": self.in_channels, "mean": list(mean), "std": list(std)}

    def features(self) -> nn.Sequential:
        """The layers in order, as one Sequential (shares parameters with this module)."""
        return nn.Sequential(
            self.conv1, self.pool1, self.conv2, self.pool2, self.conv3, self.conv4, self.conv5, self.pool5
        )

    def conv5_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv5 map, stride ``conv5_stride``: the input of RoI pooling."""
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.conv5(self.conv4(self.conv3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool5(self.conv5_features(x))

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"spec={s.name}, in_channels={self.in_channels}, widths={s.widths()}, "
            f"conv1=k{s.conv1_kernel}/s{s.conv1_stride}/p{s.conv1_padding}, bn={s.batch_norm}, ceil={s.ceil_mode}"
        )

