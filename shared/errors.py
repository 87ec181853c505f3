"""Error hierarchy shared by the teacher server and the student trainers.

Every message names what was expected, what was received, and the file, line or frame id involved,
so a user can fix the input without reading the code. The errors the teacher service answers with are
:class:`ApiError` subclasses, each with its HTTP ``status`` and stable ``code``: the server maps them to JSON
answers and the client raises the same class for a code (the table: :data:`shared.api.API_ERRORS`).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AmbiguousHeaderError",
    "ApiError",
    "BatchTooLargeError",
    "ConfigError",
    "CorruptFeatureError",
    "DataError",
    "FeatureServiceError",
    "FrameIdError",
    "FrameNotFoundError",
    "GeometryError",
    "HeaderTooLargeError",
    "ImageReadError",
    "InvalidRequestError",
    "ManifestError",
    "MethodNotAllowedError",
    "NotYetComputedError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "TooManyConnectionsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "ViewNotStoredError",
    "WeightsUnavailableError",
    "XModalError",
]


class XModalError(Exception):
    """Base class of every error this project raises on purpose."""


class ApiError(XModalError):
    """An error the teacher service answers with: HTTP ``status`` and a stable ``code`` clients switch on."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "error"


class _Keyed:
    """KeyError quotes its argument in ``str``; keep the message readable."""

    args: tuple[object, ...]

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FrameIdError(ApiError, ValueError):
    """A frame id does not match ``[A-Za-z0-9][A-Za-z0-9._:-]{0,127}``."""

    status, code = 400, "malformed_id"


class FrameNotFoundError(_Keyed, ApiError, KeyError):
    """A well-formed frame id that a store or manifest does not hold."""

    status, code = 404, "unknown_frame"


class NotYetComputedError(_Keyed, ApiError, KeyError):
    """The frame belongs to a store but precompute has not finished its shard yet."""

    status, code = 404, "not_computed"


class ViewNotStoredError(_Keyed, ApiError, KeyError):
    """A view (e.g. ``mirror``) the frame's collection was not precomputed with."""

    status, code = 404, "unknown_view"


class CorruptFeatureError(ApiError, OSError):
    """The frame's stored bytes are truncated, unreadable or fail their checksum; other frames are unaffected."""

    status, code = 500, "corrupt_feature"


class BatchTooLargeError(ApiError, ValueError):
    """A batch request names more frames, or has a larger body, than the server allows."""

    status, code = 413, "too_large"


class InvalidRequestError(ApiError, ValueError):
    """A request's parameters or body are not what the route expects (names the first problem)."""

    status, code = 422, "invalid_request"


class UnsupportedMediaTypeError(ApiError, ValueError):
    """A request body in a media type the route does not read."""

    status, code = 415, "unsupported_media_type"


class UnauthorizedError(ApiError):
    """Missing or wrong bearer token."""

    status, code = 401, "unauthorized"


class RequestTimeoutError(ApiError, TimeoutError):
    """A request head or body did not arrive in time (the connection is closed)."""

    status, code = 408, "request_timeout"


class AmbiguousHeaderError(ApiError, ValueError):
    """A header that must appear at most once appears several times."""

    status, code = 400, "ambiguous_header"


class HeaderTooLargeError(ApiError):
    """A request head over the server's size limit."""

    status, code = 431, "header_too_large"


class TooManyConnectionsError(ApiError):
    """The server holds its maximum of open connections (retry shortly)."""

    status, code = 503, "too_many_connections"


class RouteNotFoundError(ApiError):
    """No such route."""

    status, code = 404, "not_found"


class MethodNotAllowedError(ApiError):
    """The route exists, not for this method (the answer's ``Allow`` header lists the methods)."""

    status, code = 405, "method_not_allowed"


class FeatureServiceError(ApiError):
    """An answer with a code this client does not know (or no JSON error body, e.g. a proxy's 502)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code  # type: ignore[misc]


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
