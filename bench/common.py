"""Shared pieces of the benchmarks: machine description, a served store in a subprocess, timing stats."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import torch

from shared.procs import free_port

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """One line naming the machine the numbers came from."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def percentiles(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 95, 99)}


@contextlib.contextmanager
def serve_process(store: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``teacher-server serve`` in its own process on 127.0.0.1; yields the URL and the process, stops it after."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "teacher_server.cli", "serve", "--stores", str(store),
                             "--port", str(port), "--log-level", "warning"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def served(store: Path, port: int | None = None) -> Iterator[str]:
    """:func:`serve_process` for callers that need only the URL."""
    with serve_process(store, port) as (url, _):
        yield url
