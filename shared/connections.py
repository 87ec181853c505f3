"""Keep-alive HTTP/1.1 connections to one server, shared between threads: the transport of ``TeacherClient``.

The pool is urllib3's ``HTTPConnectionPool`` (``http.client`` underneath, which reads a body of known length in one
buffered call): measured side by side in ``bench/serve.py`` it ran 0.97–1.14x the frames/s of the hand-written
``http.client`` pool it replaced, and httpx cost 2–13 % more client CPU per frame (BENCHMARKS.md).
This module adds only what a trainer needs around it: urllib3's own retries and redirects off (``TeacherClient``
retries with backoff and one log line per outage), one immediate resend when a connection breaks, a fresh pool in
a forked child, and the errors callers retry collected in :data:`TransportError`.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Mapping

import urllib3
from urllib3.exceptions import ProtocolError, SSLError

from shared.errors import ConfigError

__all__ = ["ConnectionPool", "Reply", "TransportError"]

# What a request raises when the server cannot be reached or the connection breaks (refused, reset, timed out,
# closed mid-response, garbled status line): callers retry these. A closed pool (``ClosedPoolError``) is not one:
# it is a caller's bug, not an outage.
TransportError = (ProtocolError, urllib3.exceptions.TimeoutError, SSLError, OSError)

# A whole response: ``status``, ``headers`` (case-insensitive), ``data`` (the body read to its end), ``json()``.
Reply = urllib3.BaseHTTPResponse


class ConnectionPool:
    """Connections to the server of ``base_url`` (``http://`` or ``https://host[:port][/prefix]``).

    Each request takes an idle connection (the most recently used; one the server closed while idle is replaced
    before the request is sent) or opens one, and puts it back once the body is read, so a pool serves any number
    of threads with as many connections as requests are in flight; at most ``max_idle`` stay open between
    requests. Every request is read-only on the teacher service, so one whose connection breaks (the server
    closed it just as the request went out) is sent again at once on a new connection; a timeout is never resent
    (a slow server is not worth a second wait), and failures raise one of :data:`TransportError`.
    """

    def __init__(self, base_url: str, timeout: float, max_idle: int = 8) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"teacher service URL {base_url!r}: expected http://host:port or https://host:port")
        try:
            url.port  # noqa: B018 -- validates the port
        except ValueError as e:
            raise ConfigError(f"teacher service URL {base_url!r}: {e}") from None
        self._base = f"{url.scheme}://{url.netloc}"
        self._prefix = url.path.rstrip("/")
        self._options = {"timeout": urllib3.Timeout(connect=timeout, read=timeout), "maxsize": max_idle,
                         "retries": False}
        self._start_pool()

    def _start_pool(self) -> None:
        self.http = urllib3.connection_from_url(self._base, **self._options)
        self._pid = os.getpid()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        """Send one request and read the whole response."""
        if self._pid != os.getpid():
            self._forget_parents_connections()
        try:
            return self._send(method, path, body, headers)
        except ProtocolError:  # the connection broke before a response: once more, at once, on a new one
            return self._send(method, path, body, headers)

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None) -> Reply:
        try:
            return self.http.urlopen(method, self._prefix + path, body=body, headers=headers, redirect=False,
                                     preload_content=True)
        except SSLError as e:  # an untrusted certificate is not transient: raised as itself for the caller to name
            if isinstance(e.args[0], ssl.SSLCertVerificationError):
                raise e.args[0] from None
            raise

    def _forget_parents_connections(self) -> None:
        """In a forked child (a DataLoader worker given a client made before the fork): the idle sockets are the
        parent's too, and two processes reading one stream would take each other's responses. Drop them unclosed
        (the parent keeps using them) and start a pool of this process's own (no lock: one held by another of
        the parent's threads at the fork would never be released here)."""
        self._start_pool()

    def close(self) -> None:
        """Close the idle connections; connections in use close when their request ends."""
        self.http.close()
