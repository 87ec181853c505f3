"""Render the nginx config that load-balances several ``teacher-server serve`` replicas of one store.

Replicas are stateless readers, so scaling out is a standard reverse proxy: the template
(``nginx-lb.conf.template`` beside this module) holds every proxy decision (retries on a dead replica,
keep-alive, body limit, buffering of binary batches) and this module only fills in addresses and sizes, so the
tests, the benchmark and the docs run the same file:

    python -m teacher_server.nginx_lb render --replicas 10.0.0.5:8000 10.0.0.6:8000 --listen 8080 --out lb.conf
    nginx -p /var/lib/teacher-lb -c "$PWD/lb.conf"
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from string import Template

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import StrList, run_commands
from teacher_server.settings import ServeSettings

__all__ = ["NginxLbSettings", "find_nginx", "main", "render_nginx_conf", "start_nginx"]

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


class NginxLbSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEACHER_LB_", extra="ignore")

    replicas: StrList = Field(description="host:port of every `teacher-server serve` replica (comma-separated in env)")
    listen: str = Field("127.0.0.1:8080", description="where nginx listens: host:port, or a port for every interface")
    max_body_bytes: int = Field(ServeSettings.model_fields["max_body_bytes"].default, ge=1024,
                                description="largest request body; keep equal to the replicas' --max-body-bytes")
    keepalive: int = Field(16, ge=1, description="idle keep-alive connections to the replicas per nginx worker")
    worker_processes: str = Field("auto", pattern=r"^(auto|[1-9][0-9]*)$", description="nginx worker processes")
    connect_timeout_s: int = Field(2, ge=1, description="seconds to connect to a replica before trying the next one")
    timeout_s: int = Field(60, ge=1, description="seconds of replica silence per read/send, and for all tries")
    error_log: str = Field("error.log", description="error log ('stderr', or a path; relative = under nginx's -p)")
    access_log: str = Field("off", description="access log path, or 'off' (replicas count requests in /metrics)")
    out: Path | None = Field(None, description="write the config to this file (default: standard output)")

    @field_validator("replicas")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one replica is needed")
        for address in v:
            m = _ADDRESS.match(address)
            if m is None or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"replica address must be host:port, got {address!r}")
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        port = v.rsplit(":", 1)[-1]
        if not (port.isdigit() and 0 < int(port) < 65536) or (":" in v and _ADDRESS.match(v) is None):
            raise ValueError(f"listen must be host:port or a port, got {v!r}")
        return v


def render_nginx_conf(s: NginxLbSettings) -> str:
    """The complete nginx.conf text for ``s`` (standalone: run it with ``nginx -p DIR -c FILE``)."""
    template = Template(files("teacher_server").joinpath("nginx-lb.conf.template").read_text())
    servers = "\n".join(f"        server {r} max_fails=1 fail_timeout=5s;" for r in s.replicas)
    return template.substitute(
        servers=servers, listen=s.listen, max_body_bytes=s.max_body_bytes, keepalive=s.keepalive,
        worker_processes=s.worker_processes, connect_timeout_s=s.connect_timeout_s, timeout_s=s.timeout_s,
        error_log=s.error_log, access_log=s.access_log,
    )


def find_nginx() -> str | None:
    """The nginx executable, or None (Debian installs it in /usr/sbin, which a user's PATH often lacks)."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


def start_nginx(prefix: Path, s: NginxLbSettings, nginx: str = "nginx") -> subprocess.Popen:
    """Render ``s`` to ``prefix``/nginx.conf and run nginx on it in the foreground, in its own process group.

    Its pid file, logs and temp folders stay under ``prefix``; stop it with SIGQUIT (graceful) or by killing
    the process group.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(s))
    return subprocess.Popen([nginx, "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _render(s: NginxLbSettings) -> None:
    text = render_nginx_conf(s)
    if s.out is None:
        sys.stdout.write(text)
    else:
        s.out.parent.mkdir(parents=True, exist_ok=True)
        s.out.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    return run_commands(
        "python -m teacher_server.nginx_lb",
        "nginx config for teacher-server replicas of one store. Every flag can also be set by the TEACHER_LB_* "
        "env var named in its help.",
        {"render": (NginxLbSettings, _render, "write the nginx config for the given replicas")}, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
