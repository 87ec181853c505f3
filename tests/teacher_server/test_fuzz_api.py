"""Property-based fuzzing of the HTTP API on a real uvicorn: never a 5xx, every error is documented JSON.

Hypothesis, not schemathesis: the API has five routes and the batch body is read raw, so a schema-driven
generator would mostly send well-formed JSON; the inputs that matter here (traversal ids, NUL bytes, unicode,
over-long ids, broken framing, oversized and chunked bodies, wrong tokens) are written as strategies, each
with the exact answer the README documents. It also needs no new packages in the shared environment.
The ``many`` variants send 10x the examples (marked slow).
"""

from __future__ import annotations

import http.client
import io
import json
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.features import BATCH_MEDIA_TYPE, NPY_MEDIA_TYPE, decode_batch, decode_chunk
from shared.ids import FRAME_ID_RE, is_frame_id
from teacher_server.app import create_app
from teacher_server.reader import ChunkReader
from teacher_server.server import uvicorn_options
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import uvicorn_thread

TOKEN = "s3cret"
MAX_BATCH = 16
MAX_BODY = 4096
FEW, MANY = 300, 3000  # examples per property: the fast run stays under 30 s on 2 busy cores

# Every documented error code and its status (README "HTTP API"); the 404/405 of unmatched routes included.
ERROR_STATUS = {
    "malformed_id": 400, "ambiguous_header": 400, "unauthorized": 401, "unknown_frame": 404, "not_computed": 404,
    "not_found": 404, "method_not_allowed": 405, "too_large": 413, "unsupported_media_type": 415,
    "invalid_request": 422,
}
# Batch Content-Types, 2 in 3 JSON so most bodies reach the batch logic (the rest must be 415).
JSON_TYPES = ["application/json"] * 3 + ["application/json; charset=utf-8"] + [
    None, "text/plain", "application/x-www-form-urlencoded"]
HOSTILE_IDS = [
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "..", ".", "/etc/passwd", "tiny.0001/../tiny.0002",
    "tiny.0001\x00", "\x00", "%00", "tiny.0001%00.png", "C:\\Windows\\win.ini", "~root", "tiny.0001\n",
    " tiny.0001", "tiny.0001 ", "ｔｉｎｙ.0001", "tiny.０００1", "batch", "tiny.0001/", "", "a" * 128, "a" * 129,
]


@dataclass(frozen=True)
class Served:
    url: str
    chunks: dict[str, bytes]  # id -> stored chunk bytes, read in-process
    etags: dict[str, str]  # id -> the stored chunk's ETag, read in-process
    shape: tuple[int, ...]
    store: FeatureStore


@pytest.fixture(scope="module")
def served(store_path):
    store = FeatureStore.open(store_path)
    reader = ChunkReader([store])
    read = {fid: reader.read(fid) for fid in store.collections["tiny"].ids}
    reader.close()
    settings_ = ServeSettings(stores=[store_path], token=TOKEN, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY)
    with uvicorn_thread(create_app(settings_), **uvicorn_options(settings_)) as url:  # the protocol `serve` runs
        yield Served(url, {f: c.data for f, c in read.items()}, {f: c.etag for f, c in read.items()},
                     store.collections["tiny"].shape, store)


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def run_property(strategy: st.SearchStrategy, check, examples: int) -> None:
    """Run ``check`` on ``examples`` draws of ``strategy`` (no deadline: loopback latency varies)."""

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy)
    def prop(case) -> None:
        check(case)

    prop()


def assert_documented(status: int, headers, body: bytes, method: str = "GET") -> None:
    """No 5xx; an error is JSON ``{"error": {code, message}}`` with the documented status for its code."""
    assert status < 500, f"server error {status}: {body[:300]!r}"
    if status < 400:
        return
    assert headers["content-type"] == "application/json", headers
    if status == 401:
        assert headers["www-authenticate"] == "Bearer"
    if method == "HEAD":
        return
    err = json.loads(body)["error"]
    assert ERROR_STATUS.get(err["code"]) == status, err
    assert isinstance(err["message"], str) and err["message"]


# --- strategies --------------------------------------------------------------------------------------

_HEADER_CHAR = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f")
_GOOD_AUTH = st.sampled_from([f"Bearer {TOKEN}", f"bearer {TOKEN}"])
_WRONG_AUTH = st.one_of(
    st.none(),
    st.sampled_from([f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Bearer{TOKEN}", "Bearer"]),
    st.builds("{} {}".format, st.sampled_from(["Bearer", "bearer", "Basic", "Token"]),
              st.text(_HEADER_CHAR, min_size=1, max_size=64).filter(lambda t: t != TOKEN)),
)
# (Authorization header or None, whether it is the configured token); about 3 in 4 requests are authorised.
AUTH = st.tuples(st.booleans(), st.booleans()).flatmap(
    lambda coins: _WRONG_AUTH.map(lambda h: (h, False)) if all(coins) else _GOOD_AUTH.map(lambda h: (h, True)))


def frame_ids(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known),
        st.from_regex(FRAME_ID_RE),  # well-formed, almost surely unknown
        st.sampled_from(HOSTILE_IDS),
        st.text(max_size=40),  # any unicode, NUL and control characters included
        st.text(st.characters(codec="ascii"), min_size=129, max_size=2000),  # over-long
    )


def quoted(fid: str, every_byte: bool) -> str:
    """The id as one exact path segment (the server decodes it back to ``fid``)."""
    if every_byte or fid in (".", ".."):  # httpx would resolve a bare dot segment before sending
        return "".join(f"%{b:02X}" for b in fid.encode())
    return quote(fid, safe="")


@dataclass(frozen=True)
class GetCase:
    fid: str
    every_byte: bool
    format: str | None
    view: str | None  # ?view=: identity (the stored map asked for by name) or anything else (422); mirror: test_views
    params: list[tuple[str, str]]
    accept: str | None
    if_none_match: tuple[str, str] | None  # ("tag", "raw" | "W/raw" | "npy" | "W/npy" | "*") or ("text", any)
    auth: tuple[str | None, bool]


@dataclass(frozen=True)
class BatchCase:
    body: bytes
    chunked: bool
    content_type: str | None
    auth: tuple[str | None, bool]
    ids: list[str] | None = None  # set when the body is a well-formed batch request
    strict: bool = False


# Accept headers whose answer is known: True when they choose the .npy representation (q-values honoured).
ACCEPT_CHOOSES = {
    NPY_MEDIA_TYPE: True, "*/*": False, f"text/html, {NPY_MEDIA_TYPE};q=0.1": True, f"{NPY_MEDIA_TYPE};q=0": False,
    f"{NPY_MEDIA_TYPE}junk": False, "application/*": False, f"application/octet-stream;q=0.5, {NPY_MEDIA_TYPE}": True,
}


def get_cases(known: list[str]) -> st.SearchStrategy[GetCase]:
    return st.builds(
        GetCase,
        fid=frame_ids(known),
        every_byte=st.booleans(),
        format=st.one_of(st.none(), st.sampled_from(["raw", "npy"]), st.text(max_size=10)),
        view=st.one_of(st.none(), st.just("identity"), st.text(max_size=10).filter(lambda v: v != "mirror")),
        params=st.lists(st.tuples(st.text(max_size=10).filter(lambda k: k not in ("format", "view")),
                                  st.text(max_size=20)), max_size=3),
        accept=st.one_of(st.none(), st.sampled_from(list(ACCEPT_CHOOSES)), st.text(_HEADER_CHAR, max_size=30)),
        if_none_match=st.one_of(st.none(), st.sampled_from(["raw", "W/raw", "npy", "W/npy", "*"]).map(
            lambda k: ("tag", k)), st.text(_HEADER_CHAR, min_size=1, max_size=40).map(lambda t: ("text", t))),
        auth=AUTH,
    )


def _batch_json(known: list[str]) -> st.SearchStrategy[dict]:
    """Well-formed batch requests: 0..24 ids of every kind, optional strict, ignored extra keys."""
    ids = st.lists(frame_ids(known), max_size=24)
    extra = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("ids", "strict")), st.integers(),
                            max_size=2)
    return st.builds(lambda i, s, e: {**e, "ids": i, **({} if s is None else {"strict": s})},
                     ids, st.one_of(st.none(), st.booleans()), extra)


def _ill_typed_json() -> st.SearchStrategy[object]:
    """JSON values that are never a valid batch request (each must be a 422)."""
    not_a_str_list = st.one_of(st.integers(), st.text(), st.none(), st.booleans(),
                               st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                               st.lists(st.one_of(st.integers(), st.none(), st.lists(st.text())), min_size=1))
    not_a_bool = st.sampled_from([None, [], {}, 0.5, 2, -1, "maybe", "tru", "yes", "true", "false", 1, 0, "1"])
    return st.one_of(
        st.builds(lambda v: {"ids": v}, not_a_str_list),
        st.builds(lambda v: {"ids": ["tiny.0001"], "strict": v}, not_a_bool),
        st.builds(lambda v: {"idz": v}, st.lists(st.text(), max_size=3)),
        st.one_of(st.lists(st.text(), max_size=3), st.integers(), st.text(), st.none()),
    )


def batch_cases(known: list[str]) -> st.SearchStrategy[BatchCase]:
    common = {"chunked": st.booleans(), "content_type": st.sampled_from(JSON_TYPES), "auth": AUTH}
    well_formed = _batch_json(known).flatmap(lambda req: st.builds(
        BatchCase, body=st.sampled_from([json.dumps(req).encode(), json.dumps(req, ensure_ascii=False).encode()]),
        ids=st.just(req["ids"]), strict=st.just(bool(req.get("strict"))), **common))
    ill_typed = st.builds(BatchCase, body=_ill_typed_json().map(lambda v: json.dumps(v).encode()), **common)
    # Bad framing: bytes that are not JSON, and well-formed bodies cut short (a JSON object's proper prefix).
    garbage = st.builds(BatchCase, body=st.binary(max_size=600), **common)
    truncated = st.builds(BatchCase, body=st.builds(lambda req, k: (b := json.dumps(req).encode())[: k % len(b)],
                                                    _batch_json(known), st.integers(0)), **common)
    oversized = st.builds(BatchCase, body=st.one_of(
        st.binary(min_size=MAX_BODY + 1, max_size=3 * MAX_BODY),
        st.builds(lambda n: json.dumps({"ids": ["tiny.0001"] * n}).encode(), st.integers(MAX_BODY // 10, 2000)),
    ), **common)
    return st.one_of(well_formed, ill_typed, garbage, truncated, oversized)


# --- oracles -----------------------------------------------------------------------------------------

def expected_get(case: GetCase, known: set[str]) -> int:
    """Routing first (an id with a slash is another path; "batch" is the batch route), then auth, query
    validation, the id itself; a known frame's 200 may be a 304 (see ``check_get``)."""
    fid = case.fid
    if "/" in fid or not fid:
        return 404  # another path: no route (the app does not redirect trailing slashes)
    if fid == "batch":
        return 405  # GET on the POST-only batch route, token or not
    if not case.auth[1]:
        return 401
    if case.format not in (None, "raw", "npy") or case.view not in (None, "identity"):
        return 422
    if not is_frame_id(fid):
        return 400
    return 200 if fid in known else 404


def _frame_status(fid: str, known: set[str]) -> int:
    return 400 if not is_frame_id(fid) else 200 if fid in known else 404


def _is_batch_request(body: bytes) -> bool:
    try:
        v = json.loads(body)
    except ValueError:
        return False
    return isinstance(v, dict) and isinstance(v.get("ids"), list)


def expected_batch(case: BatchCase, known: set[str]) -> int | None:
    """Auth, body size, JSON shape, batch size, then ``strict``; None when a random body happens to parse."""
    if not case.auth[1]:
        return 401
    if case.content_type not in ("application/json", "application/json; charset=utf-8"):
        return 415
    if len(case.body) > MAX_BODY:
        return 413
    if case.ids is None:
        return None if _is_batch_request(case.body) else 422
    if len(case.ids) > MAX_BATCH:
        return 413
    failing = [s for s in (_frame_status(f, known) for f in case.ids) if s != 200]
    return failing[0] if case.strict and failing else 200


def header_bytes(**values: str | None) -> dict[str, bytes]:
    """Headers as latin-1 bytes (httpx would refuse non-ASCII str values), the None ones left out."""
    return {k: v.encode("latin-1") for k, v in values.items() if v is not None}


# --- properties --------------------------------------------------------------------------------------

def _if_none_match(case: GetCase, etags: dict[str, str]) -> str | None:
    """The header sent: a template resolved to the frame's ETags (an unknown frame gets a made-up one)."""
    if case.if_none_match is None:
        return None
    kind, value = case.if_none_match
    if kind == "text" or value == "*":
        return value
    raw = etags.get(case.fid, '"no-such-frame"')
    tag = f'{raw[:-1]}-npy"' if value.endswith("npy") else raw
    return f"W/{tag}" if value.startswith("W/") else tag


def _not_modified(case: GetCase, npy: bool) -> bool:
    """Whether If-None-Match names the answer's representation (weak comparison) or is ``*``: then 304."""
    if case.if_none_match is None:
        return False
    kind, value = case.if_none_match
    if kind == "text":
        return value == "*"  # random text never spells a real ETag
    return value == "*" or value.endswith("npy") == npy


def check_get(served: Served, client: httpx.Client, case: GetCase) -> None:
    headers = header_bytes(Authorization=case.auth[0], Accept=case.accept,
                           **{"If-None-Match": _if_none_match(case, served.etags)})
    params = case.params + ([("format", case.format)] if case.format is not None else []) + (
        [("view", case.view)] if case.view is not None else [])
    r = client.get(f"/features/{quoted(case.fid, case.every_byte)}", params=params, headers=headers)
    assert_documented(r.status_code, r.headers, r.content)
    expected = expected_get(case, set(served.chunks))
    if expected != 200:
        assert r.status_code == expected, (case, r.status_code, r.text[:300])
        return
    # A known frame: the ETag says which representation was chosen; ?format or a known Accept must choose it.
    raw_tag = served.etags[case.fid]
    assert r.headers["etag"] in (raw_tag, f'{raw_tag[:-1]}-npy"'), r.headers
    npy = r.headers["etag"] != raw_tag
    if case.format is not None:
        assert npy == (case.format == "npy")
    elif case.accept is None or case.accept in ACCEPT_CHOOSES:
        assert npy == ACCEPT_CHOOSES.get(case.accept, False), case.accept
    assert r.headers.get("vary") == ("Accept" if case.format is None else None)
    assert r.status_code == (304 if _not_modified(case, npy) else 200), (case, r.status_code, r.text[:300])
    if r.status_code == 304:
        assert r.content == b""
        return
    assert r.headers["content-type"] == (NPY_MEDIA_TYPE if npy else "application/octet-stream")
    if npy:
        want = decode_chunk(served.chunks[case.fid], served.shape, served.store.encoding)
        np.testing.assert_array_equal(np.load(io.BytesIO(r.content), allow_pickle=False), want)
    else:
        assert r.content == served.chunks[case.fid]


def check_batch(served: Served, client: httpx.Client, case: BatchCase) -> None:
    headers = header_bytes(Authorization=case.auth[0], **{"Content-Type": case.content_type})
    # A generator body goes out with Transfer-Encoding: chunked (no Content-Length to check up front).
    content = iter([case.body[i : i + 1000] for i in range(0, len(case.body), 1000)]) if case.chunked else case.body
    r = client.post("/features/batch", content=content, headers=headers)
    assert_documented(r.status_code, r.headers, r.content, "POST")
    known = set(served.chunks)
    expected = expected_batch(case, known)
    assert expected is None or r.status_code == expected, (case, r.status_code, r.text[:300])
    if r.status_code != 200 or case.ids is None:
        return
    assert r.headers["content-type"] == BATCH_MEDIA_TYPE
    entries = decode_batch(r.content)
    assert [e.id for e in entries] == case.ids
    assert [e.status for e in entries] == [_frame_status(f, known) for f in case.ids]
    for e in entries:
        if e.status == 200:
            assert e.data == served.chunks[e.id]
        else:
            assert ERROR_STATUS[e.code] == e.status and e.message


_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
_PATHS = ["/", "/info", "/healthz", "/metrics", "/features", "/features/", "/features/batch", "/features/tiny.0001",
          "/openapi.json", "/docs", "/features/../../etc/passwd", "/features/..%2F..%2Fetc%2Fpasswd",
          "/features/%2e%2e/%2e%2e/etc/passwd", "/features/tiny.0001/../../info", "//features//tiny.0001"]
# Request targets exactly as sent (http.client does not normalise dot segments or re-encode).
_TAIL = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)
_TARGET = st.one_of(st.sampled_from(_PATHS), st.builds("{}{}".format, st.sampled_from(_PATHS), _TAIL),
                    _TAIL.map("/{}".format))
RAW_CASES = st.tuples(st.sampled_from(_METHODS), _TARGET, AUTH, st.binary(max_size=300))


def check_raw(served: Served, case: tuple[str, str, tuple[str | None, bool], bytes]) -> None:
    """Any method on any request target, as raw as HTTP allows."""
    method, target, (auth, _), body = case
    conn = http.client.HTTPConnection(urlsplit(served.url).netloc, timeout=30)
    try:
        conn.request(method, target, body=body or None, headers={"Authorization": auth} if auth else {})
        r = conn.getresponse()
        status, headers, content = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()
    assert_documented(status, headers, content, method)


EXAMPLES = [pytest.param(FEW, id="few"), pytest.param(MANY, id="many", marks=pytest.mark.slow)]


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_get_feature(served, client, examples):
    run_property(get_cases(sorted(served.chunks)), lambda c: check_get(served, client, c), examples)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_batch(served, client, examples):
    run_property(batch_cases(sorted(served.chunks)), lambda c: check_batch(served, client, c), examples)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_any_route_raw(served, examples):
    run_property(RAW_CASES, lambda c: check_raw(served, c), examples)
