"""Error hierarchy shared by the teacher server and the student trainers.

Every message names what was expected, what was received, and the file, line or frame id involved,
so a user can fix the input without reading the code.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "FrameIdError",
    "FrameNotFoundError",
    "GeometryError",
    "ImageReadError",
    "ManifestError",
    "WeightsUnavailableError",
    "XModalError",
]


class XModalError(Exception):
    """Base class of every error this project raises on purpose."""


class FrameIdError(XModalError, ValueError):
    """A frame id does not match ``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``."""


class FrameNotFoundError(XModalError, KeyError):
    """A well-formed frame id that a store or manifest does not hold."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class ManifestError(XModalError, ValueError):
    """A manifest line is malformed; the message names the file, the 1-based line and the field."""

    def __init__(self, path: str, line: int | None, message: str, field: str | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.path, self.line, self.field = path, line, field


class DataError(XModalError, ValueError):
    """An input file exists but its content is unusable (wrong dtype, shape, units or range)."""


class ImageReadError(DataError):
    """An image file is missing, truncated or not decodable."""


class GeometryError(XModalError, ValueError):
    """Student and teacher feature maps cannot be aligned (sizes, padding, strides)."""


class ConfigError(XModalError, ValueError):
    """Invalid settings, caught before any work starts."""


class WeightsUnavailableError(XModalError, RuntimeError):
    """Pretrained weights could not be loaded (offline, missing checkpoint, wrong architecture)."""
