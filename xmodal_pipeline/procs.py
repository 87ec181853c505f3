"""Child processes of a pipeline: started in their own process groups, logged to files, all stopped on exit.

Ctrl-C (or any error) in the parent terminates every child it started — servers and trainers alike — first
with SIGTERM, then SIGKILL after a grace period, so a demo never leaves orphans holding ports or GPUs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from shared.errors import XModalError

__all__ = ["ChildProcesses", "error_line", "free_port", "poll_healthy"]

# What every CLI of the project prints, as its last word, for a clear error (shared.settings.run_commands).
_ERROR_LINE = re.compile(r"^\S[^\n]*?: error: .+$", re.MULTILINE)


def error_line(log: str) -> str | None:
    """The last ``<prog> <command>: error: <message>`` line of a child's log, None when there is none (a crash)."""
    found = _ERROR_LINE.findall(log)
    return found[-1].strip() if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None, every_s: float = 0.1) -> bool:
    """Poll ``url``/healthz every ``every_s`` seconds until it answers 200.

    Returns:
        True once healthy; False when ``timeout`` seconds pass first, or ``proc`` (the server) exits first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        time.sleep(every_s)
    return False


class ChildProcesses:
    """Starts console commands (``python -m module ...``) and guarantees they are stopped."""

    def __init__(self, log_dir: Path, grace_s: float = 10.0) -> None:
        self.log_dir, self.grace_s = log_dir, grace_s
        self.procs: list[tuple[str, subprocess.Popen]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, module: str, args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``python -m module args`` with stdout+stderr appended to ``<log_dir>/<name>.log``."""
        log = (self.log_dir / f"{name}.log").open("a")
        proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def wait(self, *procs: subprocess.Popen, timeout: float | None = None) -> None:
        """Wait for ``procs``; a failure names the process and its one-line error (the tail of its log when it
        printed none: a crash)."""
        for proc in procs:
            rc = proc.wait(timeout)
            if rc != 0:
                name = next(n for n, p in self.procs if p is proc)
                log = self.log_dir / f"{name}.log"
                text = log.read_text(errors="replace")
                if (line := error_line(text)) is not None:
                    raise XModalError(f"{name} failed (exit code {rc}): {line} [log: {log}]")
                raise XModalError(f"{name} failed with exit code {rc}; log {log} ends:\n{text[-2000:]}")

    def run(self, name: str, module: str, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Start and wait (a foreground step)."""
        self.wait(self.start(name, module, args, env))

    def wait_healthy(self, url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
        """Poll ``url``/healthz until it answers 200; a server that exits first fails with its log's tail."""
        if poll_healthy(url, timeout, proc, every_s=0.2):
            return
        if proc.poll() is not None:
            self.wait(proc)
            raise XModalError(f"server for {url} exited early")
        raise XModalError(f"{url} did not become healthy within {timeout:.0f} s")

    @contextlib.contextmanager
    def serving(self, name: str, stores: Sequence[str | os.PathLike[str]], timeout: float = 120.0) -> Iterator[str]:
        """``teacher-server serve`` of ``stores`` on a free loopback port while the block runs; yields its URL."""
        url = f"http://127.0.0.1:{(port := free_port())}"
        server = self.start(name, "teacher_server.cli", ["serve", "--stores", *stores, "--port", port,
                                                         "--log-level", "warning"])
        try:
            self.wait_healthy(url, server, timeout)
            yield url
        finally:
            self.stop(server)

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM the process group, SIGKILL after the grace period."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
