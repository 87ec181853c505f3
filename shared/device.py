"""Device selection shared by every process: CUDA when present, a clear error when asked for but absent."""

from __future__ import annotations

import torch

from shared.errors import ConfigError

__all__ = ["select_device"]


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
