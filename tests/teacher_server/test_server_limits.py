"""Connection limits of the served protocol (teacher_server/server.py): a client that never finishes its request
head (or batch body) is answered 408 and closed, an oversized head 431, connections over the cap 503 (issue 14,
point 5).

Bounded waits only: every socket has a timeout far above the server's limit, so a server that held the
connection fails the test instead of hanging it; nothing asserts how fast the server was.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import pickle
import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from teacher_server.app import create_app
from teacher_server.server import uvicorn_options
from teacher_server.settings import ServeSettings
from tests.servers import cli, kill9, uvicorn_thread, wait_healthy
from xmodal_pipeline.procs import free_port

HEAD_TIMEOUT = 1.0
WAIT = 30.0  # the bound: 30x the head timeout


@contextlib.contextmanager
def served(store_path, **limits):
    s = ServeSettings(stores=[store_path], header_timeout=HEAD_TIMEOUT, body_timeout=HEAD_TIMEOUT, **limits)
    with uvicorn_thread(create_app(s), **uvicorn_options(s)) as url:
        yield urlsplit(url).hostname, urlsplit(url).port


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails when it keeps the connection open past WAIT."""
    sock.settimeout(WAIT)
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server held the connection open for {WAIT} s (received {data[:200]!r})")
        except ConnectionResetError:  # closed with our bytes unread: what it wrote before is kept
            return data
        if not part:
            return data
        data += part


def error_of(response: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


def keep_alive_request(conn: http.client.HTTPConnection, path: str = "/healthz") -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def hold_connection(addr: tuple[str, int]) -> http.client.HTTPConnection:
    """A keep-alive connection the server has served (so it counts), retried while a just-closed connection may
    still hold a slot (the server sees a close a moment later)."""
    deadline = time.monotonic() + WAIT
    while True:
        conn = http.client.HTTPConnection(*addr, timeout=WAIT)
        if keep_alive_request(conn) == 200:
            return conn
        conn.close()
        assert time.monotonic() < deadline, "no connection slot freed up"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(store_path):
    with served(store_path, max_header_bytes=1024) as addr:
        yield addr


def test_a_partial_request_head_gets_408_and_is_closed(server):
    with socket.create_connection(server, timeout=WAIT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ... and never the rest
        status, headers, err = error_of(read_to_close(sock))
    assert status == 408 and err["code"] == "request_timeout" and "1 s" in err["message"]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"


def test_a_request_line_that_never_ends_gets_408(server):
    with socket.create_connection(server, timeout=WAIT) as sock:
        sock.sendall(b"GET /features/tiny.00")
        assert error_of(read_to_close(sock))[0] == 408


def test_a_silent_connection_is_closed_without_an_answer(server):
    with socket.create_connection(server, timeout=WAIT) as sock:
        assert read_to_close(sock) == b""


def test_a_keep_alive_connection_sending_half_a_second_request_gets_408(server):
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    try:
        assert keep_alive_request(conn) == 200
        conn.sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        status, _, err = error_of(read_to_close(conn.sock))
    finally:
        conn.close()
    assert status == 408 and err["code"] == "request_timeout"


def test_a_batch_body_that_never_completes_gets_408_and_is_closed(server):
    with socket.create_connection(server, timeout=WAIT) as sock:
        sock.sendall(b"POST /features/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b'{"ids": ["tiny.0001"')  # 20 of the 1000 bytes
        status, headers, err = error_of(read_to_close(sock))
    assert status == 408 and err["code"] == "request_timeout" and "20 bytes received" in err["message"]
    assert headers["connection"] == "close"


def test_an_oversized_head_gets_431(server):
    """Header lines keep coming, the head never ends: refused once past max_header_bytes (uvicorn alone
    buffered a 200 MB head)."""
    with socket.create_connection(server, timeout=WAIT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(400):  # 400 x 32 bytes, far past 1024 + one read
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending into a closing connection
            try:
                sock.sendall(b"X-Pad-%04d: %s\r\n" % (i, b"a" * 18))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.005)  # separate reads on the server (pacing, not a timing assertion)
        status, _, err = error_of(read_to_close(sock))
    assert status == 431 and err["code"] == "header_too_large" and "1024" in err["message"]


def test_a_slow_but_complete_head_is_served(server):
    """The limit is on a whole head, not on each read: one sent in pieces well inside the deadline is served."""
    with socket.create_connection(server, timeout=WAIT) as sock:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
            sock.sendall(piece)
        assert read_to_close(sock).startswith(b"HTTP/1.1 200 ")


def test_connections_beyond_the_cap_get_503(store_path):
    with served(store_path, max_connections=2) as addr:
        held = [hold_connection(addr) for _ in range(2)]  # both open and counted now
        try:
            r = httpx.get(f"http://{addr[0]}:{addr[1]}/features/tiny.0001", timeout=WAIT)
            assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"
            assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
            assert [keep_alive_request(c) for c in held] == [200, 200]  # the held ones are still served
            held.pop().close()
            held.append(hold_connection(addr))  # the freed slot is served again
        finally:
            for c in held:
                c.close()


def test_the_options_pickle_for_spawned_workers(store_path):
    """``serve --workers N`` hands uvicorn's config to spawned processes: the protocol factory must pickle."""
    s = ServeSettings(stores=[store_path], header_timeout=3, max_header_bytes=2048, max_connections=7)
    factory = pickle.loads(pickle.dumps(uvicorn_options(s)["http"]))
    assert factory.keywords == {"header_timeout": 3.0, "max_header_bytes": 2048, "max_connections": 7}


def test_serve_cli_applies_the_limits(store_path):
    """The flags reach the real ``teacher-server serve``: a silent socket is closed, a second connection 503."""
    port = free_port()
    proc = cli("teacher_server.cli", "serve", "--stores", str(store_path), "--port", str(port), "--log-level",
               "warning", "--header-timeout", "1", "--max-connections", "1")
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            assert read_to_close(sock) == b""
        conn = hold_connection(("127.0.0.1", port))
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=WAIT).status_code == 503
        finally:
            conn.close()
    finally:
        kill9(proc)
