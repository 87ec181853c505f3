"""Domain errors of the teacher service; ``app.py`` maps each to an HTTP status and error code."""

from __future__ import annotations

from shared.errors import XModalError

__all__ = ["BatchTooLargeError", "CorruptFeatureError", "NotYetComputedError", "ViewNotStoredError"]


class NotYetComputedError(XModalError, KeyError):
    """The frame belongs to a store but precompute has not finished its shard yet."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ViewNotStoredError(XModalError, KeyError):
    """A view (e.g. ``mirror``) the frame's collection was not precomputed with."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CorruptFeatureError(XModalError, OSError):
    """The frame's stored bytes are truncated or fail their checksum; other frames are unaffected."""


class BatchTooLargeError(XModalError, ValueError):
    """A batch request names more frames than the server allows."""
