"""Security properties of the service: constant-time token check, body limits, loopback bind, ids never paths."""

from __future__ import annotations

import builtins
import http.client
import io
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shared.features import decode_batch
from teacher_server import deps
from teacher_server.app import create_app
from teacher_server.settings import ServeSettings
from tests.servers import cli, kill9, uvicorn_thread, wait_healthy
from xmodal_pipeline.procs import free_port

LIMIT = 4096
SECRET = b"do-not-serve-me"


def test_token_goes_through_compare_digest(store_path, monkeypatch):
    """Every check of a configured token, right or wrong, of any length, is one ``hmac.compare_digest``."""
    calls: list[tuple[bytes, bytes]] = []
    real = deps.hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path], token="s3cret"))) as url:
        for token, status in [("s3cret", 200), ("s3creT", 401), ("s", 401), ("s3cret" * 50, 401), ("sécret", 401)]:
            r = httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001"]},
                           headers={"Authorization": f"Bearer {token}".encode("latin-1")})
            assert r.status_code == status, r.text
            assert calls.pop() == (token.encode(), b"s3cret")
        assert httpx.post(f"{url}/features/batch", json={"ids": []}).status_code == 401  # no header at all


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_batch_body_limit_is_exact(store_path, chunked):
    """A body of exactly ``max_body_bytes`` is parsed; one byte more is refused, declared length or not."""
    body = b'{"ids": ["tiny.0001"]}'
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path], max_body_bytes=LIMIT))) as url:
        for size, status in [(LIMIT, 200), (LIMIT + 1, 413), (50 * LIMIT, 413)]:
            padded = body + b" " * (size - len(body))
            content = iter([padded[i : i + 1000] for i in range(0, size, 1000)]) if chunked else padded
            r = httpx.post(f"{url}/features/batch", content=content, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (size, r.text[:200])
            if status == 413:
                assert r.json()["error"]["code"] == "too_large"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


def test_serve_binds_loopback_by_default(store_path, monkeypatch):
    """``teacher-server serve`` without --host listens on 127.0.0.1 only (checked in the kernel's socket table)."""
    monkeypatch.delenv("TEACHER_HOST", raising=False)
    port = free_port()
    proc = cli("teacher_server.cli", "serve", "--stores", str(store_path), "--port", str(port), "--log-level",
               "warning")
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
    finally:
        kill9(proc)


TRAVERSALS = [
    "/features/../secret.txt", "/features/..%2Fsecret.txt", "/features/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/features/%2e%2e%2f%2e%2e%2fsecret.txt", "/features/%2Fetc%2Fpasswd", "/features/..%5C..%5Csecret.txt",
    "/features/tiny.0001%2F..%2F..%2Fsecret.txt", "/features/..", "/features/%2e%2e", "/features/secret.txt",
    "/features/tiny%2Ffeatures%2Fc%2F0%2F0%2F0%2F0", "/features/%00secret.txt", "/features/~%2Fsecret.txt",
]


@pytest.fixture
def file_spy(monkeypatch) -> list[str]:
    """Paths given to os.open, os.stat, io.FileIO and open() in this process (the server runs in a thread of it)."""
    seen: list[str] = []

    def spy(real):
        def wrapper(path, *a, **kw):
            if isinstance(path, str | bytes | os.PathLike):
                seen.append(os.fsdecode(path))
            return real(path, *a, **kw)

        return wrapper

    for mod, name in [(os, "open"), (os, "stat"), (io, "FileIO"), (builtins, "open")]:
        monkeypatch.setattr(mod, name, spy(getattr(mod, name)))
    return seen


def test_traversal_ids_never_reach_the_filesystem(store_path, file_spy):
    """Hostile ids answer 400/404 JSON and open nothing; the spy does see the shard a real id opens."""
    (store_path.parent / "secret.txt").write_bytes(SECRET)
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url:
        file_spy.clear()
        for target in TRAVERSALS:
            conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
            conn.request("GET", target)  # sent as is: http.client neither normalises nor re-encodes
            r = conn.getresponse()
            body = r.read()
            conn.close()
            assert r.status in (400, 404) and r.getheader("content-type") == "application/json", (target, body)
            assert SECRET not in body
        ids = ["../secret.txt", "/etc/passwd", "..\\secret.txt", "secret.txt", "tiny/features/c/0/0/0/0"]
        entries = decode_batch(httpx.post(f"{url}/features/batch", json={"ids": ids}).content)
        assert [e.status for e in entries] == [400, 400, 400, 404, 400]
        assert not _data_paths(file_spy, store_path.parent), file_spy  # (linecache may stat our own sources)
        assert httpx.get(f"{url}/features/tiny.0001").status_code == 200  # positive control for the spy
    touched = _data_paths(file_spy, store_path.parent)
    assert touched and all(Path(p).is_relative_to(store_path) for p in touched), touched


def _data_paths(paths: list[str], data_root: Path) -> list[str]:
    """The paths in or beside the store, or naming the attack targets (pure string work: the spy is live)."""
    return [p for p in list(paths) if Path(os.path.normpath(p)).is_relative_to(data_root) or "passwd" in p
            or "secret" in p]
