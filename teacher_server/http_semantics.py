"""HTTP semantics the routes need and Starlette does not give: content negotiation (RFC 9110 §12.5.1),
``If-None-Match`` with weak comparison (§13.1.2), representation ETags, request media types, and HEAD (§9.3.2).

Pure functions over header strings, plus one small ASGI wrapper; the routes call them only when the header
they read is present, so a plain ``GET /features/{id}`` pays nothing for them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "HeadAsGet",
    "MediaRange",
    "allow_header",
    "etag_matches",
    "is_json",
    "negotiate",
    "parse_accept",
    "representation_etag",
]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*;\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})")
_RANGE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
# Elements of a comma-separated list, commas inside quoted strings kept (RFC 9110 §5.6.1).
_ELEMENT = re.compile(rf'(?:[^,"]|{_QUOTED})+')
_ENTITY_TAG = re.compile(r'[\s,]*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[\s,]*')


class MediaRange(NamedTuple):
    """One element of an ``Accept`` header: ``type/subtype`` (either may be ``*``) and its weight 0..1."""

    type: str
    subtype: str
    q: float

    def specificity(self, media_type: str) -> int:
        """How closely this range names ``media_type`` (2 exact, 1 ``type/*``, 0 ``*/*``), -1 when it does not."""
        kind, _, sub = media_type.partition("/")
        if self.type == "*":
            return 0
        if self.type != kind:
            return -1
        return 1 if self.subtype == "*" else 2 if self.subtype == sub else -1


def _parse_range(element: str) -> MediaRange | None:
    m = _RANGE.match(element)
    if m is None or (m.group(1) == "*" and m.group(2) != "*"):  # "*/json" is not a media range
        return None
    q, pos = 1.0, m.end()
    while (p := _PARAM.match(element, pos)) is not None:
        if p.group(1).lower() == "q":
            if _QVALUE.fullmatch(p.group(2)) is None:
                return None
            q = float(p.group(2))
            break  # what follows the weight is accept-ext, which no one defines
        pos = p.end()
    else:
        if element[pos:].strip():
            return None
    return MediaRange(m.group(1).lower(), m.group(2).lower(), q)


def parse_accept(header: str) -> tuple[MediaRange, ...]:
    """The media ranges of an ``Accept`` header, in order; malformed elements are left out.

    Media-type parameters other than ``q`` are ignored (the representations served have none).
    """
    ranges = (_parse_range(e) for e in _ELEMENT.findall(header))
    return tuple(r for r in ranges if r is not None)


def _quality(ranges: Sequence[MediaRange], media_type: str) -> float:
    """The weight of ``media_type``: that of its most specific matching range, 0 when none matches."""
    best, q = -1, 0.0
    for r in ranges:
        s = r.specificity(media_type)
        if s >= 0 and (s > best or (s == best and r.q > q)):
            best, q = s, r.q
    return q


@functools.lru_cache(maxsize=256)  # clients repeat their Accept header on every request
def negotiate(accept: str, offers: tuple[str, ...]) -> str | None:
    """The offered media type the ``Accept`` header prefers: highest weight, ties to the earlier offer.

    Args:
        accept: the header's value.
        offers: media types that can be served, the default first.

    Returns:
        One of ``offers``, or None when the header makes none acceptable (all weigh 0). A header with no
        well-formed element accepts anything (as if absent): the first offer.
    """
    ranges = parse_accept(accept)
    if not ranges:
        return offers[0]
    weights = [_quality(ranges, o) for o in offers]
    best = max(range(len(offers)), key=lambda i: (weights[i], -i))
    return offers[best] if weights[best] > 0 else None


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison: ``W/`` ignored on both) or is ``*``.

    A header that is not a list of entity-tags matches nothing, so the full answer is sent.
    """
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    pos, end = 0, len(if_none_match)
    while pos < end:
        m = _ENTITY_TAG.match(if_none_match, pos)
        if m is None:
            return False
        if m.group(1) == opaque:
            return True
        pos = m.end()
    return False


def representation_etag(etag: str, suffix: str) -> str:
    """The ETag of another representation of the same stored bytes: ``"tag"`` -> ``"tag-suffix"``."""
    return f'{etag[:-1]}-{suffix}"'


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` is ``application/json`` (any case, parameters such as charset allowed)."""
    return content_type is not None and content_type.partition(";")[0].strip().lower() == "application/json"


class HeadAsGet:
    """Answer ``HEAD`` as the app answers ``GET``, without the body (RFC 9110 §9.3.2: every GET route).

    The headers (``Content-Length`` included) are those of the GET answer. A 405's ``Allow`` lists HEAD
    wherever it lists GET.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def allow_header(methods: str) -> str:
    """An ``Allow`` value with HEAD beside GET (``HeadAsGet`` serves it), sorted for a stable header."""
    names = {m.strip().upper() for m in methods.split(",") if m.strip()}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))
