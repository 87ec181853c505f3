"""Liveness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from teacher_server.deps import MetricsDep, ReaderDep, require_token

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(reader: ReaderDep) -> dict[str, object]:
    """Liveness: the stores are open. Needs no token (for container health checks)."""
    return {"status": "ok", "frames": len(reader)}


@router.get("/metrics", dependencies=[Depends(require_token)], response_class=Response)
def metrics(m: MetricsDep) -> Response:
    """Prometheus metrics: requests, bytes, latency histogram, errors by code."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
