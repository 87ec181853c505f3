"""FastAPI dependencies: settings, the chunk reader, metrics and the bearer-token check.

All ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop that cost more per request than
everything these do.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from shared.errors import AmbiguousHeaderError, UnauthorizedError
from teacher_server.metrics import Metrics
from teacher_server.reader import ChunkReader
from teacher_server.settings import ServeSettings

__all__ = ["MetricsDep", "ReaderDep", "SettingsDep", "require_token"]


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_reader(request: Request) -> ChunkReader:
    return request.app.state.reader


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ReaderDep = Annotated[ChunkReader, Depends(get_reader)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def require_token(request: Request) -> None:
    """When a token is configured, require exactly one ``Authorization: Bearer <token>`` (constant-time compare).

    Raises:
        AmbiguousHeaderError: several Authorization headers (400).
        UnauthorizedError: none, another scheme, or another token (401).
    """
    token = request.app.state.settings.token
    if token is None:
        return
    given_headers = request.headers.getlist("authorization")
    if len(given_headers) > 1:  # which one counts would depend on the proxy or framework reading it: refuse
        raise AmbiguousHeaderError(f"{len(given_headers)} Authorization headers in one request; send one")
    scheme, _, given = (given_headers[0] if given_headers else "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise UnauthorizedError()
