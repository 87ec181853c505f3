"""Feature-map geometry: a trunk's output size for an input size, and the student's conv1 padding search.

Supervision transfer is fully convolutional on whole frames, so the student's pool5 map must have the
teacher's H x W. The size is taken from a real forward pass, on the ``meta`` device: shapes propagate
through every layer (branches and residual adds included) without memory or arithmetic, so it is right for
any trunk, sequential or not, and costs about 1 ms for AlexNet or VGG16 and 0.1 s for ResNet-50.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from shared.errors import GeometryError

__all__ = ["feature_size", "find_conv1_padding"]


def _input_like(trunk: nn.Module, input_hw: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """A (1, C, H, W) zero input; C from the first layer that declares ``in_channels`` (1 for a pools-only
    trunk, where it does not matter), dtype from the first floating parameter."""
    channels = next((m.in_channels for m in trunk.modules() if isinstance(getattr(m, "in_channels", None), int)), 1)
    dtype = next((p.dtype for p in trunk.parameters() if p.is_floating_point()), torch.float32)
    return torch.zeros(1, channels, *input_hw, dtype=dtype, device=device)


def _meta_copy(trunk: nn.Module) -> nn.Module:
    """A copy of ``trunk`` whose parameters and buffers are meta tensors (no bytes copied), in eval mode.

    ``deepcopy`` takes the tensors from ``memo``, so only the module structure is copied and the caller's
    module is never moved or switched to eval (eval: training-mode normalisation rejects 1x1 maps at batch 1).
    """
    memo: dict[int, object] = {}
    for t in (*trunk.parameters(), *trunk.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(trunk, memo).eval()


def _on_meta(trunk: nn.Module) -> bool:
    return any(t.is_meta for t in (*trunk.parameters(), *trunk.buffers()))


def _output(trunk: nn.Module, input_hw: tuple[int, int]) -> object:
    """The trunk's output for a zero input: on the meta device, else (a layer without meta support, e.g. one
    that reads values) a real forward of an eval-mode copy on the trunk's own device."""
    try:
        with torch.no_grad():
            return _meta_copy(trunk)(_input_like(trunk, input_hw, "meta"))
    except Exception:  # too small (the real forward below says so too), or a layer meta cannot run
        if _on_meta(trunk):
            raise
    real = copy.deepcopy(trunk).eval()
    device = next((t.device for t in (*trunk.parameters(), *trunk.buffers())), torch.device("cpu"))
    with torch.inference_mode():
        return real(_input_like(trunk, input_hw, device))


def feature_size(trunk: nn.Module, input_hw: tuple[int, int]) -> tuple[int, int]:
    """H x W of the trunk's output map for an input of ``input_hw`` pixels (any trunk: branches, residuals).

    Args:
        trunk: maps (N, C, H, W) to (N, C', H', W'); it is neither moved nor changed.
        input_hw: input height and width in pixels.
    Returns:
        (H', W') in map cells.
    Raises:
        GeometryError: naming the input size, when the input is too small for the trunk (a layer raises on
            a map smaller than its kernel, or the output has an empty side) or the trunk returns no map.
    """
    h, w = input_hw
    try:
        out = _output(trunk, input_hw)
    except Exception as e:  # torch raises RuntimeError / ValueError for maps smaller than a kernel
        raise GeometryError(f"input {h}x{w} is too small for the trunk, or does not fit it: "
                            f"{type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise GeometryError(f"the trunk must return an (N, C, H, W) map; for a {h}x{w} input it returned "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    oh, ow = int(out.shape[2]), int(out.shape[3])
    if oh <= 0 or ow <= 0:
        raise GeometryError(f"input {h}x{w} is too small for the trunk: its output map is {oh}x{ow}")
    return oh, ow


def find_conv1_padding(
    make_trunk: Callable[[int], nn.Module],
    input_hw: tuple[int, int],
    target_hw: tuple[int, int],
    preferred: int = 0,
    max_padding: int = 16,
) -> int:
    """The conv1 padding whose pool5 H x W equals ``target_hw`` for inputs of ``input_hw``.

    Args:
        make_trunk: builds the student trunk for a given conv1 padding. It is called under
            ``torch.device("meta")``, so the candidates cost neither memory nor weight initialisation.
        preferred: the spec's own padding; among matching paddings the closest to it wins.
    Raises:
        GeometryError: listing the pool5 sizes reachable with paddings 0..max_padding.
    """
    reachable: dict[int, tuple[int, int]] = {}
    for pad in range(max_padding + 1):
        with torch.device("meta"):
            trunk = make_trunk(pad)
        try:
            reachable[pad] = feature_size(trunk, input_hw)
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
