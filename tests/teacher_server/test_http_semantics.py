"""HTTP semantics of the API on a real uvicorn: representations and their ETags, content negotiation, HEAD,
405/415/400 answers, strict batch bodies, and the token as configured (issue 14, points 4 and 6)."""

from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from shared.features import NPY_MEDIA_TYPE, decode_batch
from teacher_server.app import create_app
from teacher_server.cli import main
from teacher_server.http_semantics import MediaRange, allow_header, etag_matches, negotiate, parse_accept
from teacher_server.server import uvicorn_options
from teacher_server.settings import ServeSettings
from tests.servers import uvicorn_thread

RAW = "application/octet-stream"
OFFERS = (RAW, NPY_MEDIA_TYPE)
FID = "tiny.0003"


# --- pure functions ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "chosen"), [
    ("application/x-npy", NPY_MEDIA_TYPE),
    ("APPLICATION/X-NPY", NPY_MEDIA_TYPE),  # media types are case-insensitive
    ("application/x-npy;q=0", None),  # q=0: not acceptable (and nothing else is offered)
    ("application/x-npy; q=0.000, */*", RAW),
    ("application/x-npyjunk", None),  # another media type, not a prefix match
    ("application/x-npy-junk, text/html", None),
    ("*/*", RAW),  # a tie goes to the stored bytes
    ("application/*", RAW),
    ("application/*;q=0.5, application/x-npy", NPY_MEDIA_TYPE),
    ("application/octet-stream;q=0.5, application/x-npy", NPY_MEDIA_TYPE),
    ("application/octet-stream;q=0, */*", NPY_MEDIA_TYPE),  # the most specific range decides each type
    ("application/x-npy;q=0.1, text/html", NPY_MEDIA_TYPE),
    ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", RAW),  # a browser
    ('application/x-npy;note="a, b";q=0.2, application/octet-stream;q=0.1', NPY_MEDIA_TYPE),  # quoted comma
    ("application/x-npy;q=2, application/octet-stream", RAW),  # an invalid weight drops its element
    ("application/x-npy;q=abc", RAW),  # no well-formed element: as if absent
    ("", RAW),
    ("garbage", RAW),
    ("*/x-npy", RAW),  # not a media range
    (" , ,application/x-npy ,", NPY_MEDIA_TYPE),  # empty list elements are allowed
])
def test_negotiate(accept, chosen):
    assert negotiate(accept, OFFERS) == chosen


def test_parse_accept_keeps_order_and_weights():
    assert parse_accept("text/html;level=1;q=0.7, */*;q=0.1, application/x-npy") == (
        MediaRange("text", "html", 0.7), MediaRange("*", "*", 0.1), MediaRange("application", "x-npy", 1.0))


@pytest.mark.parametrize(("header", "matches"), [
    ('"abc-1"', True),
    ('W/"abc-1"', True),  # weak comparison (RFC 9110 §13.1.2): the W/ prefix is ignored
    ('"zzz", W/"abc-1"', True),
    ('  "zzz" ,"abc-1"  ', True),
    ('"zzz",,"abc-1",', True),
    ("*", True),
    (" * ", True),
    ('"abc-1-npy"', False),
    ('"abc"', False),
    ("abc-1", False),  # not an entity-tag
    ('"zzz", abc-1', False),
    ('W/ "abc-1"', False),
    ("*, \"abc-1\"", False),  # "*" only alone; the rest is malformed: the full answer is always correct
    ("", False),
])
def test_etag_matches(header, matches):
    assert etag_matches(header, '"abc-1"') is matches


def test_allow_header_adds_head_beside_get():
    assert allow_header("GET") == "GET, HEAD"
    assert allow_header("POST") == "POST"
    assert allow_header("POST, GET") == "GET, HEAD, POST"


# --- the server -------------------------------------------------------------------------------------

def _serve(store_path, **settings):
    s = ServeSettings(stores=[store_path], max_batch=16, max_body_bytes=4096, **settings)
    return uvicorn_thread(create_app(s), **uvicorn_options(s))


@pytest.fixture(scope="module")
def served(store_path):
    with _serve(store_path) as url:
        yield url


def _get(url: str, query: str = "", **headers: str) -> httpx.Response:
    return httpx.get(f"{url}/features/{FID}{query}", headers={k.replace("_", "-"): v for k, v in headers.items()})


def test_raw_and_npy_are_distinct_representations(served, reference):
    raw, npy = _get(served), _get(served, "?format=npy")
    assert raw.headers["content-type"] == RAW and npy.headers["content-type"] == NPY_MEDIA_TYPE
    assert raw.headers["etag"] != npy.headers["etag"]
    assert npy.headers["etag"].startswith('"') and not npy.headers["etag"].startswith("W/")
    np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), reference[FID])
    # The .npy is plain float32: no codec header, dtype float32; shape and teacher as for raw.
    assert "x-feature-codec" not in npy.headers and npy.headers["x-feature-dtype"] == "float32"
    assert raw.headers["x-feature-codec"].startswith("zstd")
    assert npy.headers["x-feature-shape"] == raw.headers["x-feature-shape"]
    assert npy.headers["x-teacher-id"] == raw.headers["x-teacher-id"]
    # Accept picks the same representations, with the same ETags, and then says it varies on Accept.
    by_accept = _get(served, Accept=NPY_MEDIA_TYPE)
    assert by_accept.headers["etag"] == npy.headers["etag"] and by_accept.content == npy.content
    assert raw.headers["vary"] == "Accept" and by_accept.headers["vary"] == "Accept"
    assert "vary" not in npy.headers and "vary" not in _get(served, "?format=raw").headers  # ?format decides


def test_if_none_match_is_per_representation_with_weak_comparison(served):
    raw_tag, npy_tag = _get(served).headers["etag"], _get(served, "?format=npy").headers["etag"]
    assert _get(served, "?format=npy", If_None_Match=raw_tag).status_code == 200  # no cross-representation 304
    assert _get(served, If_None_Match=npy_tag).status_code == 200
    for query, tag in [("", raw_tag), ("?format=npy", npy_tag)]:
        for header in (tag, f"W/{tag}", "*", f'"nope", {tag}'):
            r = _get(served, query, If_None_Match=header)
            assert r.status_code == 304 and r.content == b"", (query, header)
            assert r.headers["etag"] == tag and "immutable" in r.headers["cache-control"]
    assert _get(served, Accept=NPY_MEDIA_TYPE, If_None_Match=npy_tag).headers["vary"] == "Accept"
    assert _get(served, If_None_Match='"nope"').status_code == 200
    assert httpx.get(f"{served}/features/nope.1", headers={"If-None-Match": "*"}).status_code == 404  # no frame


@pytest.mark.parametrize(("accept", "media_type"), [
    ("application/x-npy;q=0", RAW), ("application/x-npyjunk", RAW), ("*/*", RAW), ("application/*", RAW),
    ("text/html", RAW),  # nothing offered is acceptable: the header is disregarded (RFC 9110 §12.5.1)
    ("application/x-npy;q=0.5, application/octet-stream;q=0.4", NPY_MEDIA_TYPE),
    ("application/octet-stream;q=0.5, application/x-npy", NPY_MEDIA_TYPE),
])
def test_accept_q_values_end_to_end(served, accept, media_type):
    r = _get(served, Accept=accept)
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    assert _get(served, "?format=raw", Accept=accept).headers["content-type"] == RAW  # ?format wins


def test_cache_control_is_private_under_a_token(store_path, served):
    assert _get(served).headers["cache-control"] == "public, max-age=31536000, immutable"
    with _serve(store_path, token="s3cret") as url:
        r = _get(url, Authorization="Bearer s3cret")
        assert r.status_code == 200 and r.headers["cache-control"] == "private, max-age=31536000, immutable"


def _exchange(url: str, requests: list[tuple[str, str]]) -> list[tuple[int, dict[str, str], bytes]]:
    """Several requests on ONE keep-alive connection: a HEAD answer that carried a body would be read as the
    next answer's status line and fail it."""
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    out = []
    try:
        for method, path in requests:
            conn.request(method, path)
            r = conn.getresponse()
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
    finally:
        conn.close()
    return out


@pytest.mark.parametrize("path", [f"/features/{FID}", f"/features/{FID}?format=npy", "/info", "/healthz",
                                  "/metrics", "/openapi.json"])
def test_head_is_get_without_a_body(served, path):
    (head_status, head, body), (get_status, got, content), after = _exchange(
        served, [("HEAD", path), ("GET", path), ("GET", "/healthz")])
    assert head_status == get_status == 200 and body == b"" and content
    for name in ("content-type", "etag", "vary", "cache-control", "x-feature-shape"):
        assert head.get(name) == got.get(name), name
    if "etag" in got:  # the feature map: its length is announced (other bodies may differ by a counter)
        assert head["content-length"] == got["content-length"] == str(len(content))
    assert after[0] == 200


def test_head_errors_are_headers_of_the_json_error(served):
    (status, headers, body), _ = _exchange(served, [("HEAD", "/features/nope.1"), ("GET", "/healthz")])
    assert status == 404 and headers["content-type"] == "application/json" and body == b""


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/features/batch", "POST"), ("HEAD", "/features/batch", "POST"), ("PUT", "/features/batch", "POST"),
    ("DELETE", f"/features/{FID}", "GET, HEAD"), ("POST", "/info", "GET, HEAD"),
])
def test_405_says_what_is_allowed(served, method, path, allow):
    r = httpx.request(method, f"{served}{path}")
    assert r.status_code == 405 and r.headers["allow"] == allow
    if method != "HEAD":
        err = r.json()["error"]
        assert err["code"] == "method_not_allowed" and allow in err["message"], err


def test_405_comes_before_the_token(store_path):
    with _serve(store_path, token="s3cret") as url:
        assert httpx.get(f"{url}/features/batch").status_code == 405
        assert httpx.get(f"{url}/features/batcH").status_code == 401  # only "batch" itself is the batch route


@pytest.mark.parametrize("strict", ["yes", "true", 1, 0, "1", None, []])
def test_strict_must_be_a_json_boolean(served, strict):
    r = httpx.post(f"{served}/features/batch", json={"ids": [FID], "strict": strict})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and "strict" in err["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx", "json"])
def test_batch_requires_a_json_content_type(served, content_type):
    """What a browser may POST cross-site without a preflight (text/plain, forms) is refused with 415."""
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(f"{served}/features/batch", content=json.dumps({"ids": [FID]}), headers=headers)
    assert r.status_code == 415, r.text
    err = r.json()["error"]
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_batch_accepts_json_with_parameters(served, content_type):
    r = httpx.post(f"{served}/features/batch", content=json.dumps({"ids": [FID], "strict": True}),
                   headers={"Content-Type": content_type})
    assert r.status_code == 200 and [e.status for e in decode_batch(r.content)] == [200]


def _raw_get(url: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    try:
        conn.putrequest("GET", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_two_authorization_headers_are_400(store_path):
    with _serve(store_path, token="s3cret") as url:
        for pair in (["Bearer s3cret", "Bearer s3cret"], ["Bearer wrong", "Bearer s3cret"],
                     ["Bearer s3cret", "Basic x"]):
            status, body = _raw_get(url, f"/features/{FID}", [("Authorization", v) for v in pair])
            assert status == 400, body
            assert json.loads(body)["error"]["code"] == "ambiguous_header"
        assert _raw_get(url, f"/features/{FID}", [("Authorization", "Bearer s3cret")])[0] == 200
        assert _raw_get(url, "/healthz", [("Authorization", "a"), ("Authorization", "b")])[0] == 200  # no auth


def test_token_whitespace_is_stripped(store_path):
    assert ServeSettings(stores=[store_path], token=" tok \n").token.get_secret_value() == "tok"
    assert ServeSettings(stores=[store_path], token="").token is None
    with _serve(store_path, token="  s3cret\n") as url:
        assert _get(url, Authorization="Bearer s3cret").status_code == 200
        assert _get(url, Authorization="Bearer  s3cret").status_code == 200  # (header OWS is not the token's)


def test_whitespace_only_token_is_refused_at_start_up(store_path, monkeypatch, capsys):
    with pytest.raises(ValidationError, match="only whitespace"):
        ServeSettings(stores=[store_path], token="  \t")
    monkeypatch.setenv("TEACHER_TOKEN", "   ")
    assert main(["serve", "--stores", str(store_path)]) == 2
    err = capsys.readouterr().err
    assert "TEACHER_TOKEN" in err and "only whitespace" in err and "Traceback" not in err
