"""The HTTP API against a real uvicorn on 127.0.0.1 and real stores."""

import io
import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from shared.client import TeacherClient
from shared.errors import FrameIdError, FrameNotFoundError, UnauthorizedError
from shared.features import BATCH_MEDIA_TYPE, decode_batch, decode_chunk, encode_chunk, encoding
from teacher_server.app import create_app
from teacher_server.precompute import WorkerSlot, precompute
from teacher_server.reader import ChunkReader
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import uvicorn_thread
from tests.teacher_server.conftest import SHARD


@pytest.fixture(scope="module")
def served(store_path):
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path], max_batch=16, max_body_bytes=4096))) as url:
        yield url


def test_single_raw_and_npy_round_trip(served, reference):
    with TeacherClient(served) as c:
        for fid, ref in reference.items():
            np.testing.assert_array_equal(c.get(fid), ref)
        fid = "tiny.0005"
        np.testing.assert_array_equal(c.get_npy(fid), reference[fid])
    r = httpx.get(f"{served}/features/{fid}", headers={"Accept": "application/x-npy"})
    assert r.headers["content-type"] == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), reference[fid])


def test_headers_etag_and_304(served, reference):
    r = httpx.get(f"{served}/features/tiny.0001")
    assert r.status_code == 200
    assert r.headers["x-feature-shape"] == ",".join(map(str, reference["tiny.0001"].shape))
    assert r.headers["x-feature-dtype"] == "float32"
    assert r.headers["x-feature-codec"].startswith("zstd")
    assert r.headers["x-teacher-id"].startswith("alexnet-small-pool5-")
    assert "immutable" in r.headers["cache-control"]
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith('W/')
    again = httpx.get(f"{served}/features/tiny.0001", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = httpx.get(f"{served}/features/tiny.0002", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    # The body is the stored chunk, decodable with the advertised encoding alone.
    arr = decode_chunk(r.content, reference["tiny.0001"].shape, encoding("f32-zstd1"))
    np.testing.assert_array_equal(arr, reference["tiny.0001"])


def test_batch_equals_singles_and_reports_per_frame_status(served, reference):
    ids = ["tiny.0003", "nope.1", "tiny.0036", "bad id", "tiny.0003"]
    r = httpx.post(f"{served}/features/batch", json={"ids": ids})
    assert r.status_code == 200 and r.headers["content-type"] == BATCH_MEDIA_TYPE
    entries = decode_batch(r.content)
    assert [e.status for e in entries] == [200, 404, 200, 400, 200]
    assert [e.code for e in entries] == [None, "unknown_frame", None, "malformed_id", None]
    single = httpx.get(f"{served}/features/tiny.0036")
    assert entries[2].data == single.content and entries[2].etag == single.headers["etag"]
    with TeacherClient(served) as c:
        batch = c.get_many(list(reference))
        for i, ref in enumerate(reference.values()):
            np.testing.assert_array_equal(batch[i], ref)
        with pytest.raises(FrameNotFoundError, match=r"nope\.1"):
            c.get_many(["tiny.0001", "nope.1"])


def test_get_many_keeps_order_and_repeats_and_uses_its_cache(served, reference, tmp_path):
    ids = ["tiny.0005", "tiny.0001", "tiny.0005", "tiny.0030", "tiny.0001"]
    expected = np.stack([reference[f] for f in ids])
    with TeacherClient(served, cache_dir=tmp_path) as c:
        np.testing.assert_array_equal(c.get_many(ids), expected)
        assert len(list(tmp_path.rglob("*.chunk"))) == 3  # one entry per distinct frame
        # Entries are read from disk: a planted (valid) entry of zeros comes back in both places of that frame.
        entry = c._cache_path("tiny.0005", "identity")
        head = entry.read_bytes()[: 1 + 4 * 3]
        entry.write_bytes(head + encode_chunk(np.zeros_like(reference["tiny.0005"]), encoding("f32-zstd1")))
        got = c.get_many(ids)
        assert not got[0].any() and not got[2].any()
        np.testing.assert_array_equal(got[[1, 3, 4]], expected[[1, 3, 4]])
        entry.write_bytes(head + b"garbage")  # a damaged entry is refetched, never trusted
        np.testing.assert_array_equal(c.get_many(ids), expected)
        np.testing.assert_array_equal(c.get("tiny.0005"), reference["tiny.0005"])


def test_strict_batch_fails_whole_request(served):
    r = httpx.post(f"{served}/features/batch", json={"ids": ["tiny.0001", "nope.1"], "strict": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_frame"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/features/nope.1", None, 404, "unknown_frame"),
        ("GET", "/features/bad%20id", None, 400, "malformed_id"),
        ("GET", "/features/.hidden", None, 400, "malformed_id"),
        ("GET", "/features/" + "a" * 200, None, 400, "malformed_id"),
        ("GET", "/features/..%2F..%2Fetc%2Fpasswd", None, 404, "not_found"),
        ("GET", "/features/tiny.0001?format=xml", None, 422, "invalid_request"),
        ("POST", "/features/batch", {"ids": [f"tiny.{i:04d}" for i in range(17)]}, 413, "too_large"),
        ("POST", "/features/batch", {"ids": ["x" * 100] * 60}, 413, "too_large"),
        ("POST", "/features/batch", {"ids": "tiny.0001"}, 422, "invalid_request"),
        ("POST", "/features/batch", {"idz": []}, 422, "invalid_request"),
        ("DELETE", "/features/tiny.0001", None, 405, "method_not_allowed"),
    ],
)
def test_errors_are_json_with_codes(served, method, path, body, status, code):
    r = httpx.request(method, f"{served}{path}", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]


def test_bad_batch_framing_body(served):
    r = httpx.post(f"{served}/features/batch", content=b"\x00\xff not json",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_info_health_metrics(served, reference):
    info = httpx.get(f"{served}/info").json()
    col = info["collections"]["tiny"]
    assert col["frames"] == col["frames_done"] == len(reference)
    assert col["shape"] == list(reference["tiny.0000"].shape) and col["shard_frames"] == SHARD
    assert info["layer"] == "pool5" and info["dtype"] == "float32" and info["max_batch"] == 16
    assert col["stats"]["mean_l2_norm"] > 0 and len(col["stats"]["channel_means"]) == col["shape"][0]
    assert httpx.get(f"{served}/healthz").json() == {"status": "ok", "frames": len(reference)}
    httpx.get(f"{served}/features/nope.2")
    text = httpx.get(f"{served}/metrics").text
    assert 'teacher_requests_total{route="/features/{frame_id}",status="200"}' in text
    assert 'teacher_errors_total{code="unknown_frame"}' in text
    assert "teacher_request_seconds_bucket" in text
    spec = httpx.get(f"{served}/openapi.json").json()
    assert "XMB1" in json.dumps(spec["paths"]["/features/batch"])


def test_auth_required_when_configured(store_path):
    app = create_app(ServeSettings(stores=[store_path], token="s3cret"))
    with uvicorn_thread(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # health checks need no token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            r = httpx.get(f"{url}/features/tiny.0001", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/info").status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401
        with TeacherClient(url, token="s3cret") as c:
            assert c.get("tiny.0001").ndim == 3
        with pytest.raises(UnauthorizedError, match="401 unauthorized"), TeacherClient(url, token="nope") as c:
            c.get("tiny.0001")


def test_serving_a_store_while_it_is_filled(tmp_path, dataset, teacher):
    store = tmp_path / "s"
    precompute(store, [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD, loader_workers=0,
               worker=WorkerSlot(0, 2), progress=False)
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        r = httpx.get(f"{url}/features/tiny.0009")  # shard 1 belongs to worker 1: not computed yet
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_computed"
        assert httpx.get(f"{url}/features/tiny.0001").status_code == 200
        precompute(store, [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD, loader_workers=0,
                   worker=WorkerSlot(1, 2), progress=False)
        assert httpx.get(f"{url}/features/tiny.0009").status_code == 200  # appears without a restart
        assert httpx.get(f"{url}/info").json()["collections"]["tiny"]["frames_done"] == 37
    assert not list(store.rglob("*.partial"))


def test_client_validates_ids_locally(served):
    with TeacherClient(served) as c, pytest.raises(FrameIdError):
        c.get("../etc/passwd")


def test_reader_evicting_shards_under_concurrent_reads_returns_each_frames_bytes(store_path):
    """One open shard at most and 4 threads reading across 5 shards: evictions never hand a reader another
    shard's bytes (an evicted shard's file stays open while a thread still reads it)."""
    col = FeatureStore.open(store_path).collections["tiny"]
    ids = list(col.ids)
    expected = {fid: ChunkReader([FeatureStore.open(store_path)]).read(fid).data for fid in ids}
    reader = ChunkReader([FeatureStore.open(store_path)], max_open_shards=1)

    def work(seed: int) -> int:
        rng = random.Random(seed)
        for _ in range(400):
            fid = rng.choice(ids)
            assert reader.read(fid).data == expected[fid], fid
        return 400

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(work, range(4))) == 1600
    reader.close()
