"""The teacher service's API contract beyond the wire format (:mod:`shared.features`): the error table and the
``GET /info`` document, shared by the server (which answers with them) and the client (which reads them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import (
    AmbiguousHeaderError,
    ApiError,
    BatchTooLargeError,
    CorruptFeatureError,
    FrameIdError,
    FrameNotFoundError,
    HeaderTooLargeError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotYetComputedError,
    RequestTimeoutError,
    RouteNotFoundError,
    TooManyConnectionsError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ViewNotStoredError,
)
from shared.identity import TeacherIdentity

__all__ = ["API_ERRORS", "CollectionInfo", "CollectionStats", "ServiceInfo", "error_class"]

API_ERRORS: tuple[type[ApiError], ...] = (
    FrameIdError, AmbiguousHeaderError, UnauthorizedError, NotYetComputedError, FrameNotFoundError,
    ViewNotStoredError, RouteNotFoundError, MethodNotAllowedError, RequestTimeoutError, BatchTooLargeError,
    UnsupportedMediaTypeError, InvalidRequestError, HeaderTooLargeError, CorruptFeatureError,
    TooManyConnectionsError,
)
"""Every error the service answers with (exception, ``status``, ``code``): one place for server and client."""

_BY_CODE = {cls.code: cls for cls in API_ERRORS}


def error_class(code: str) -> type[ApiError] | None:
    """The exception of an error code the service answers with, or None for a code not in the table."""
    return _BY_CODE.get(code)


class CollectionStats(BaseModel):
    """Statistics of a collection over its done shards (:meth:`teacher_server.store.Collection.summary`); the
    value fields appear once a shard with statistics is done."""

    model_config = ConfigDict(extra="allow")

    frames_done: int
    stats_frames: int = 0
    stats_missing_shards: list[int] = Field(default_factory=list)
    raw_float32_bytes: int | None = None
    stored_bytes: int | None = None
    compression_ratio: float | None = None
    max_abs_error: float | None = None
    max_relative_error: float | None = None
    zero_fraction: float | None = None
    mean_l2_norm: float | None = None
    rms_l2_norm: float | None = None
    channel_means: list[float] | None = None


class CollectionInfo(BaseModel):
    """One collection (a frame-shape group) as the service reports it."""

    model_config = ConfigDict(extra="allow")

    shape: tuple[int, int, int] = Field(description="(C, H, W) of every map")
    views: list[str] = Field(default_factory=lambda: ["identity"], description="views stored per frame")
    input_size: tuple[int, int] = Field(description="(H, W) of the teacher's input")
    frames: int
    frames_done: int
    shard_frames: int
    stats: CollectionStats


class ServiceInfo(BaseModel):
    """``GET /info``: the teacher, the encoding and every collection served."""

    model_config = ConfigDict(extra="allow")  # a newer server may say more than this client knows

    teacher: TeacherIdentity
    teacher_id: str
    layer: str
    encoding: dict[str, Any] = Field(description="FeatureEncoding.to_dict() of the served chunks")
    dtype: str
    codec: str = Field(description="the X-Feature-Codec header value")
    frames: int
    max_batch: int
    collections: dict[str, CollectionInfo]
