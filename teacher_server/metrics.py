"""Prometheus metrics of the service and a pure-ASGI middleware that records them.

A pure ASGI wrapper (not ``BaseHTTPMiddleware``) keeps the per-request overhead to a few microseconds.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware", "route_label"]

_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The service's metrics in their own registry (several apps in one test process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("teacher_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.bytes = Counter("teacher_response_bytes_total", "response body bytes", ["route"], registry=self.registry)
        self.latency = Histogram("teacher_request_seconds", "request latency", ["route"], buckets=_BUCKETS,
                                 registry=self.registry)
        self.errors = Counter("teacher_errors_total", "error responses by error code", ["code"], registry=self.registry)
        self.frames = Counter("teacher_frames_served_total", "feature maps sent", ["route"], registry=self.registry)
        self.frame_errors = Counter("teacher_batch_frame_errors_total", "frames of batch responses answered with an "
                                    "error status, by error code", ["code"], registry=self.registry)


def route_label(path: str) -> str:
    """Bounded label for a path (frame ids must not become label values)."""
    if path == "/features/batch":
        return path
    if path.startswith("/features/"):
        return "/features/{frame_id}"
    return path if path in ("/info", "/healthz", "/metrics", "/docs", "/openapi.json") else "other"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        label = route_label(scope["path"])
        start = time.perf_counter()
        status, size = 500, 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.bytes.labels(label).inc(size)
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
