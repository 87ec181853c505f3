"""Device selection and mixed precision shared by every process: CUDA when present, a clear error when asked for
but absent; autocast in float16 on CUDA and, when asked for, in bfloat16 on the CPU (the same code path)."""

from __future__ import annotations

import contextlib

import torch

from shared.errors import ConfigError

__all__ = ["autocast", "autocast_dtype", "select_device"]


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda``/``cuda:N`` without CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {name!r}: {e}") from None


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` (None: unset = on for CUDA only; True; False) on ``device``, or None for
    float32 (:data:`shared.settings.AMP_HELP` says it to users)."""
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` in ``dtype`` on ``device``, or nothing for float32."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
