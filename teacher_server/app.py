"""The FastAPI application: ``create_app(settings)`` opens the stores once and wires the routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import (
    ApiError,
    ConfigError,
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    UnauthorizedError,
    XModalError,
)
from teacher_server.http_semantics import HeadAsGet, allow_header
from teacher_server.metrics import Metrics, MetricsMiddleware
from teacher_server.reader import ChunkReader
from teacher_server.routes import features, health, info
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore

__all__ = ["create_app", "create_app_from_env", "open_reader"]

log = logging.getLogger(__name__)

# Errors are the ApiError classes of shared.errors: each carries its status and code (the table, shared with the
# client: shared.api.API_ERRORS). Some answers need a header: 408 closes (the rest of the body may still trickle).
_ERROR_HEADERS = {401: {"WWW-Authenticate": "Bearer"}, 408: {"Connection": "close"}}


def _error(status: int, code: str, message: str, metrics: Metrics, headers: dict[str, str] | None = None):
    metrics.errors.labels(code).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def open_reader(settings: ServeSettings) -> ChunkReader:
    """Open every store read-only; they must share one teacher and encoding (one target space per server).

    Raises:
        FileNotFoundError: a store does not exist.
        ConfigError: stores of different teachers or encodings, or a frame id in two of them.
    """
    stores = [FeatureStore.open(p) for p in settings.stores]
    for s in stores:
        if not s.encoding.crc32c:
            log.warning("store %s is format version 1: its chunks carry no CRC32C, so damaged bytes are found only "
                        "when a client decodes them; `teacher-server migrate --store %s --out NEW` copies it into a "
                        "version-2 store", s.location, s.location)
    first = stores[0]
    for s in stores[1:]:
        if s.teacher != first.teacher or s.encoding != first.encoding:
            raise ConfigError(
                f"stores {first.location} and {s.location} hold different teachers or encodings "
                f"({first.teacher.short_id()} vs {s.teacher.short_id()}); serve them from separate servers"
            )
    try:
        return ChunkReader(stores)
    except ValueError as e:
        if isinstance(e, XModalError):
            raise
        raise ConfigError(f"cannot serve {', '.join(str(s.location) for s in stores)} together: {e}") from None


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the app; the stores open at start-up (a bad path fails before the first request)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.reader = open_reader(settings)
        try:
            yield
        finally:
            app.state.reader.close()

    app = FastAPI(
        title="Teacher feature service",
        version="1",
        description="Cached teacher pool5 feature maps by frame id, for cross-modal supervision transfer. "
        "Errors are JSON: {\"error\": {\"code\", \"message\"}}.",
        lifespan=lifespan,
        redirect_slashes=False,  # "/features/<id>/" is a JSON 404, not a redirect built from the Host header
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(HeadAsGet)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for router in (features.router, info.router, health.router):
        app.include_router(router)

    async def api_error(request: Request, exc: ApiError):
        message = str(exc) or ("a valid bearer token is required" if isinstance(exc, UnauthorizedError) else exc.code)
        return _error(exc.status, exc.code, message, metrics, _ERROR_HEADERS.get(exc.status))

    app.add_exception_handler(ApiError, api_error)

    async def validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _error(InvalidRequestError.status, InvalidRequestError.code, f"{where}: {first['msg']}", metrics)

    async def http_error(request: Request, exc: StarletteHTTPException):
        known = {cls.status: cls.code for cls in (RouteNotFoundError, MethodNotAllowedError)}
        code = known.get(exc.status_code, "http_error")
        headers, message = dict(exc.headers or {}), str(exc.detail)
        if "Allow" in headers:  # a 405 must say what is allowed (RFC 9110 §15.5.6)
            headers["Allow"] = allow_header(headers["Allow"])
            message = f"{request.method} is not allowed on {request.scope['path']} (allowed: {headers['Allow']})"
        return _error(exc.status_code, code, message, metrics, headers)

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers: settings from ``TEACHER_*`` env vars."""
    return create_app(ServeSettings())  # type: ignore[call-arg]
