"""Test helpers: free loopback ports, uvicorn in a thread, CLI subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from xmodal_pipeline.procs import free_port, poll_healthy

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def uvicorn_thread(app, port: int | None = None, **config: object) -> Iterator[str]:
    """Run ``app`` with a real uvicorn on 127.0.0.1 in a thread (``config``: more ``uvicorn.Config`` options);
    yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m <module> args`` (a console entry point) as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def run_cli(module: str, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_torchrun(nproc: int, module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node nproc -m module args`` (a free rendezvous port); fails on error."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", module, *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun {module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-8000:]}")
    return proc


def kill9(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def wait_healthy(url: str, timeout: float = 60) -> None:
    if not poll_healthy(url, timeout):
        raise TimeoutError(f"{url} did not become healthy in {timeout} s")


def args_of(**kw: object) -> Sequence[str]:
    """``--flag value`` pairs from keyword arguments (lists become several values)."""
    out: list[str] = []
    for k, v in kw.items():
        out.append("--" + k.replace("_", "-"))
        out += [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)]
    return out


@contextlib.contextmanager
def moto_s3(*buckets: str) -> Iterator[str]:
    """moto's S3 server (the real protocol over HTTP) on a free 127.0.0.1 port with ``buckets`` created.

    Meanwhile the standard AWS_* env vars point at it: ``AWS_ENDPOINT_URL_S3`` is moto, while the generic
    ``AWS_ENDPOINT_URL`` is a closed port, so a client that ignored the S3-specific variable would fail.
    """
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL_S3": url, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_SESSION_TOKEN", "AWS_PROFILE"]}
    os.environ.update(env)
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(k, None)
    try:
        s3 = boto3.client("s3")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
