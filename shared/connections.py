"""Keep-alive HTTP/1.1 connections to one server, shared between threads: the transport of ``TeacherClient``.

The HTTP itself is the standard library's ``http.client``; this module only keeps idle connections for reuse.
Why not httpx's transport: httpx reads a response body in 64 KiB pieces, each copied through h11's buffers with a
timeout system call per read, where ``http.client`` reads a body of known length in one buffered call. Side by
side in ``bench/serve.py`` (the same 64-frame batch requests, framing and decode), that was 4–8 µs less client CPU
per frame and, with two batches in flight, 1.00–1.10x of the in-process read + decode rate instead of 0.81–0.90x
(BENCHMARKS.md).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.errors import ConfigError

__all__ = ["ConnectionPool", "Reply", "TransportError"]

# What a request raises when the server cannot be reached or the connection breaks (refused, reset, timed out,
# closed mid-response, garbled status line): callers retry these.
TransportError = (OSError, http.client.HTTPException)


class Reply(NamedTuple):
    """A whole response: status, headers (case-insensitive ``get``) and the body read to its end."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class ConnectionPool:
    """Connections to the server of ``base_url`` (``http://`` or ``https://host[:port][/prefix]``).

    Each request takes an idle connection (the most recently used) or opens one, and puts it back once the body is
    read, so a pool serves any number of threads with as many connections as requests are in flight; at most
    ``max_idle`` stay open between requests. Every request is read-only on the teacher service, so one that fails
    on a *reused* connection (the server closed it while idle: uvicorn does after 5 s) is sent again at once on a
    new connection; failures on a new connection raise one of :data:`TransportError`.
    """

    def __init__(self, base_url: str, timeout: float, max_idle: int = 4) -> None:
        url = urllib.parse.urlsplit(base_url)
        kinds = {"http": http.client.HTTPConnection, "https": http.client.HTTPSConnection}
        if url.scheme not in kinds or not url.hostname:
            raise ConfigError(f"teacher service URL {base_url!r}: expected http://host:port or https://host:port")
        try:
            port = url.port
        except ValueError as e:
            raise ConfigError(f"teacher service URL {base_url!r}: {e}") from None
        self._open = lambda: kinds[url.scheme](url.hostname, port, timeout=timeout)
        self._prefix = url.path.rstrip("/")
        self._idle: list[http.client.HTTPConnection] = []
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        """Send one request and read the whole response."""
        while True:
            conn, reused = self._take()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError:
                conn.close()  # a slow server: never worth a second wait on another connection
                raise
            except TransportError:
                conn.close()
                if reused:
                    continue
                raise
            if resp.will_close:
                conn.close()
            else:
                self._put(conn)
            return Reply(resp.status, resp.headers, data)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._pid != os.getpid():
            self._forget_parents_connections()
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._open(), False

    def _put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _forget_parents_connections(self) -> None:
        """In a forked child (a DataLoader worker given a client made before the fork): the idle sockets are the
        parent's too, and two processes reading one stream would take each other's responses. Drop them (the
        parent keeps using them) and start with a fresh lock."""
        self._lock = threading.Lock()
        self._idle = []
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the idle connections; connections in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
