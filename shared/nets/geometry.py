"""Feature-map geometry: pool5 size for an input size, and the conv1 padding search.

Supervision transfer is fully convolutional on whole frames, so the student's pool5 map must have the
teacher's H x W. Sizes are computed analytically from the layer hyper-parameters (no forward pass), so
the search over paddings is instant even for VGG16.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import nn

from shared.errors import GeometryError

__all__ = ["feature_size", "find_conv1_padding", "output_length"]

_SHAPE_NEUTRAL = (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Identity, nn.LocalResponseNorm, nn.Sequential)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def output_length(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil: bool = False) -> int:
    """Output length of a conv/pool along one axis (PyTorch's formula, incl. its ceil-mode rule)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    # PyTorch (like Caffe) drops a last window that would start inside the right padding.
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _leaves(module: nn.Module) -> Iterable[nn.Module]:
    children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from _leaves(child)


def feature_size(trunk: nn.Module | Iterable[nn.Module], input_hw: tuple[int, int]) -> tuple[int, int]:
    """H x W of the trunk's output for an input of ``input_hw`` pixels.

    The trunk's leaf modules are walked in registration order (the order AlexNetTrunk and torchvision's
    ``features`` apply them). Only Conv2d / MaxPool2d / AvgPool2d change the size.

    Raises:
        GeometryError: when the input is too small (a map shrinks to 0) or a layer's effect is unknown.
    """
    h, w = input_hw
    leaves = _leaves(trunk) if isinstance(trunk, nn.Module) else (m for t in trunk for m in _leaves(t))
    for m in leaves:
        if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
            d = _pair(getattr(m, "dilation", 1))
            ceil = bool(getattr(m, "ceil_mode", False))
            h = output_length(h, k[0], s[0], p[0], d[0], ceil)
            w = output_length(w, k[1], s[1], p[1], d[1], ceil)
            if h <= 0 or w <= 0:
                raise GeometryError(f"input {input_hw[0]}x{input_hw[1]} is too small: {m} leaves an empty map")
        elif not isinstance(m, _SHAPE_NEUTRAL):
            raise GeometryError(f"cannot compute the output size through layer {m!r}")
    return h, w


def find_conv1_padding(
    make_trunk: Callable[[int], nn.Module],
    input_hw: tuple[int, int],
    target_hw: tuple[int, int],
    preferred: int = 0,
    max_padding: int = 16,
) -> int:
    """The conv1 padding whose pool5 H x W equals ``target_hw`` for inputs of ``input_hw``.

    Args:
        make_trunk: builds the student trunk for a given conv1 padding (cheap: called per candidate).
        preferred: the spec's own padding; among matching paddings the closest to it wins.
    Raises:
        GeometryError: listing the pool5 sizes reachable with paddings 0..max_padding.
    """
    reachable: dict[int, tuple[int, int]] = {}
    for pad in range(max_padding + 1):
        try:
            reachable[pad] = feature_size(make_trunk(pad), input_hw)
        except GeometryError:
            continue
    matches = [p for p, hw in reachable.items() if hw == tuple(target_hw)]
    if not matches:
        sizes = sorted({f"{h}x{w}" for h, w in reachable.values()})
        raise GeometryError(
            f"no conv1 padding in 0..{max_padding} gives the teacher's pool5 {target_hw[0]}x{target_hw[1]} "
            f"for {input_hw[0]}x{input_hw[1]} inputs; the student can reach {sizes}. "
            "Change the input size or the student's conv1 kernel/stride."
        )
    return min(matches, key=lambda p: (abs(p - preferred), p))
