"""Frame ids: opaque keys shared by manifests, the feature store and the HTTP API.

A frame id is never used as a filesystem path; stores map ids to row indices.
"""

from __future__ import annotations

import re

from shared.errors import FrameIdError

__all__ = ["FRAME_ID_PATTERN", "FRAME_ID_RE", "is_frame_id", "validate_frame_id"]

FRAME_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
FRAME_ID_RE = re.compile(rf"\A{FRAME_ID_PATTERN}\Z")


def is_frame_id(value: object) -> bool:
    """True when ``value`` is a string matching :data:`FRAME_ID_PATTERN`."""
    return isinstance(value, str) and FRAME_ID_RE.match(value) is not None


def validate_frame_id(value: object) -> str:
    """Return ``value`` unchanged if it is a valid frame id.

    Raises:
        FrameIdError: naming the bad value (shortened) and the expected pattern.
    """
    if is_frame_id(value):
        return value  # type: ignore[return-value]
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise FrameIdError(f"invalid frame id {shown}: expected 1-128 characters matching {FRAME_ID_PATTERN}")

