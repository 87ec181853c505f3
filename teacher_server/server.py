"""uvicorn's HTTP/1.1 protocol with the limits it lacks: a request-head deadline, a head size cap and a connection
cap, each answered with the service's JSON error body.

uvicorn (0.55) holds a connection that never finishes its request head open indefinitely (its keep-alive timer
runs only between requests), buffers a head of any size (a 200 MB header was accepted here), and answers
``limit_concurrency`` with a plain-text 503. :class:`LimitedHttpProtocol` is its httptools protocol plus:

- a timer per request head, armed when a connection opens and at the first byte of each later request,
  cancelled when the head is complete: on expiry a connection that sent part of a head gets 408, one that sent
  nothing is closed silently (as a browser's speculative connection should be);
- a count of the bytes read while a head is incomplete: past ``max_header_bytes`` (plus at most the one read
  in which the head began) it gets 431;
- a cap on open connections: a request on a connection beyond ``max_connections`` gets 503 with
  ``Retry-After`` and ``Connection: close`` (idle ones beyond it are closed by the head timer).

The options travel as a ``functools.partial`` of the class, which pickles, so ``serve --workers N`` hands them to
its spawned workers with the rest of uvicorn's config.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shared.errors import ApiError, HeaderTooLargeError, RequestTimeoutError, TooManyConnectionsError
from teacher_server.settings import ServeSettings

__all__ = ["LimitedHttpProtocol", "uvicorn_options"]


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI answer to a request over the connection cap (uvicorn's plain-text one, in JSON)."""
    err = TooManyConnectionsError
    body = _error_body(err.code, "the server holds its maximum of open connections; retry shortly")
    await send({"type": "http.response.start", "status": err.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with a head deadline, a head size cap and the server's connection cap.

    Args:
        header_timeout: seconds to receive a complete request head.
        max_header_bytes: bytes a request head may take (checked per read, see the module docstring).
        max_connections: open connections this process serves; requests on further ones get 503.
    """

    def __init__(self, *args: Any, header_timeout: float, max_header_bytes: int, max_connections: int,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # ours replaces uvicorn's (which answers in plain text)
        self.header_timeout, self.max_header_bytes, self.max_connections = (
            header_timeout, max_header_bytes, max_connections)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False  # a request's first byte arrived, its head is not complete yet
        self._head_bytes = 0

    # -- the head deadline --------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            self._refuse(RequestTimeoutError,
                         f"the request head was not complete within {self.header_timeout:g} s")
        else:
            self.transport.close()

    def _refuse(self, error: type[ApiError], message: str) -> None:
        """Answer a request whose head never completed, then close (no ASGI cycle exists for it)."""
        status = error.status
        self.logger.warning("%s: %d %s", self.client, status, message)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head behind a response in progress: close after it
            return
        body = _error_body(error.code, message)
        head = [STATUS_LINE[status]]
        head += [b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    # -- uvicorn's hooks ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        began_earlier = self._head_begun
        super().data_received(data)
        if self._head_begun and began_earlier and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._cancel_head_timer()
                self._refuse(HeaderTooLargeError,
                             f"the request head exceeds the limit of {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun, self._head_bytes = True, 0
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._head_begun = False
        self._cancel_head_timer()
        if len(self.connections) <= self.max_connections:
            super().on_headers_complete()
            return
        app, self.app = self.app, _too_many_connections  # this request only (uvicorn reads self.app once here)
        try:
            super().on_headers_complete()
        finally:
            self.app = app


def uvicorn_options(s: ServeSettings) -> dict[str, Any]:
    """The ``uvicorn.run`` / ``uvicorn.Config`` options that enforce the connection limits of ``s``."""
    return {
        "http": functools.partial(LimitedHttpProtocol, header_timeout=s.header_timeout,
                                  max_header_bytes=s.max_header_bytes, max_connections=s.max_connections),
        "timeout_keep_alive": s.keep_alive_timeout,
    }
