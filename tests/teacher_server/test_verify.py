"""Damaged shards: serving answers 5xx for the affected frames only; verify finds them; repair rewrites them."""

import shutil

import httpx
import numpy as np

from shared.client import TeacherClient
from shared.features import decode_batch, encoding
from teacher_server.app import create_app
from teacher_server.precompute import precompute
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from teacher_server.verify import verify_store
from tests.servers import free_port, run_cli, uvicorn_thread
from tests.teacher_server.conftest import SHARD


def _damage(store, shard: int, how: str) -> None:
    path = store / FeatureStore.open(store).collections["tiny"].shard_key(shard)
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip bytes inside the first chunk's compressed data
        data[40:48] = bytes(b ^ 0xFF for b in data[40:48])
        path.write_bytes(bytes(data))


def test_corrupt_and_truncated_shards_are_isolated_found_and_repaired(tmp_path, store_path, dataset, teacher):
    store = tmp_path / "s"
    shutil.copytree(store_path, store)
    _damage(store, 1, "truncate")
    _damage(store, 3, "flip")
    found = verify_store(FeatureStore.open(store))
    shards = {d.shard for d in found}
    assert shards == {1, 3}
    assert {d.frame_id for d in found if d.shard == 1} == {f"tiny.{i:04d}" for i in range(8, 16)}
    assert run_cli("teacher_server.cli", "verify", "--store", str(store), check=False).returncode == 2

    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url:
        r = httpx.get(f"{url}/features/tiny.0009")
        assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_feature"
        assert "truncated" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/features/tiny.0001").status_code == 200  # other shards keep serving
        assert httpx.get(f"{url}/features/tiny.0030").status_code == 200
        # In a batch the damaged frames get their own status; the rest of the batch is served.
        batch = decode_batch(httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001", "tiny.0009",
                                                                           "tiny.0030", "tiny.0010"]}).content)
        assert [(e.status, e.code) for e in batch] == [(200, None), (500, "corrupt_feature"), (200, None),
                                                       (500, "corrupt_feature")]
        strict = httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001", "tiny.0009"], "strict": True})
        assert strict.status_code == 500 and strict.json()["error"]["code"] == "corrupt_feature"

    summary = precompute(store, [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD, loader_workers=0,
                         repair=True, progress=False)
    assert summary.shards_written == 2
    assert verify_store(FeatureStore.open(store)) == []
    a = FeatureStore.open(store).collections["tiny"].read(slice(None))
    b = FeatureStore.open(store_path).collections["tiny"].read(slice(None))
    np.testing.assert_array_equal(a, b)


def test_client_retries_until_the_server_comes_back(store_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(ServeSettings(stores=[store_path]))
    with TeacherClient(url, wait=30, backoff=0.05, max_backoff=0.2) as c:
        import threading

        started = threading.Event()

        def serve_later():
            with uvicorn_thread(app, port=port):
                started.set()
                done.wait(30)

        done = threading.Event()
        t = threading.Thread(target=serve_later, daemon=True)
        timer = threading.Timer(0.5, t.start)
        timer.start()
        arr = c.get("tiny.0002")  # connection refused at first, then served
        done.set()
        t.join(10)
    assert arr.ndim == 3 and c.retried >= 1 and started.is_set()
