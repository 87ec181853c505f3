"""The feature store on S3 (moto's server on loopback): precompute, serve, verify, repair, errors."""

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import numpy as np
import pytest

from shared.client import TeacherClient
from shared.errors import CorruptFeatureError, DataError
from shared.features import encoding
from teacher_server.app import create_app
from teacher_server.precompute import WorkerSlot, precompute
from teacher_server.reader import ChunkReader
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from teacher_server.verify import verify_store
from tests.servers import moto_s3, run_cli, uvicorn_thread
from tests.teacher_server.conftest import SHARD

BUCKET = "xmodal-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3(BUCKET) as url:
        yield url


def _precompute(url, dataset, teacher, **kw):
    return precompute(url, [dataset], teacher, encoding("f32-zstd1"), shard_frames=SHARD, batch_size=5,
                      loader_workers=0, progress=False, **kw)


def _chunks(store) -> dict[str, bytes]:
    """Every frame's stored chunk bytes, through the serving read path."""
    reader = ChunkReader([store])
    try:
        return {fid: reader.read(fid).data for col in store.collections.values() for fid in col.ids}
    finally:
        reader.close()


@pytest.fixture(scope="module")
def s3_store(s3, dataset, teacher) -> str:
    """Two workers at once (threads, --worker 0/2 and 1/2) writing one s3:// store: no lock on S3."""
    url = f"s3://{BUCKET}/teachers/tiny"
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_precompute, url, dataset, teacher, worker=WorkerSlot(i, 2)) for i in range(2)]
        summaries = [r.result() for r in runs]
    assert sorted(s.shards_written for s in summaries) == [2, 3]  # 5 shards, each written by its owner only
    return url


def test_s3_store_equals_local_store_chunk_for_chunk(s3_store, store_path):
    s3_chunks, local_chunks = _chunks(FeatureStore.open(s3_store)), _chunks(FeatureStore.open(store_path))
    assert s3_chunks.keys() == local_chunks.keys() and len(s3_chunks) == 37
    assert s3_chunks == local_chunks
    store = FeatureStore.open(s3_store)
    assert store.collections["tiny"].done().all()
    assert store.collections["tiny"].summary() == FeatureStore.open(store_path).collections["tiny"].summary()
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="teachers/tiny/")["Contents"]}
    assert {"teachers/tiny/zarr.json", "teachers/tiny/tiny/features/c/4/0/0/0/0"} <= keys  # the local layout


def test_serve_from_s3_through_uvicorn_and_teacher_client(s3_store, store_path):
    local = FeatureStore.open(store_path).collections["tiny"]
    expected = local.read(slice(None))
    with uvicorn_thread(create_app(ServeSettings(stores=[s3_store]))) as url, TeacherClient(url) as client:
        assert client.info().collections["tiny"].frames_done == 37
        np.testing.assert_array_equal(client.get_many(local.ids), expected)
        np.testing.assert_array_equal(client.get("tiny.0009"), expected[9])


def test_verify_and_repair_on_s3_and_reader_sees_replaced_shards(s3, dataset, teacher, store_path):
    url = f"s3://{BUCKET}/repair"
    _precompute(url, dataset, teacher)
    store = FeatureStore.open(url)
    reader = ChunkReader([store])
    good = reader.read("tiny.0009").data  # shard 1's index is now cached with its ETag
    key = f"repair/{store.collections['tiny'].shard_key(1)}"
    client = boto3.client("s3")
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=body[: len(body) // 2])  # truncated, as by a bad copy
    with pytest.raises(CorruptFeatureError, match="truncated"):
        reader.read("tiny.0009")  # the conditional GET saw the new ETag and re-fetched the index
    found = verify_store(FeatureStore.open(url))
    assert {d.frame_id for d in found} == {f"tiny.{i:04d}" for i in range(8, 16)}
    assert run_cli("teacher_server.cli", "verify", "--store", url, check=False).returncode == 2

    assert _precompute(url, dataset, teacher, repair=True).shards_written == 1
    assert verify_store(FeatureStore.open(url)) == []
    assert reader.read("tiny.0009").data == good == _chunks(FeatureStore.open(store_path))["tiny.0009"]
    reader.close()


def test_unknown_bucket_and_missing_store_are_clear_errors(s3, dataset, teacher):
    with pytest.raises(DataError, match=re.escape(f"bucket 'no-such-bucket' does not exist at {s3} (create it")):
        FeatureStore.open("s3://no-such-bucket/store")
    with pytest.raises(DataError, match="bucket 'no-such-bucket' does not exist"):
        _precompute("s3://no-such-bucket/store", dataset, teacher)
    with pytest.raises(FileNotFoundError, match=f"no feature store at s3://{BUCKET}/nothing-here"):
        FeatureStore.open(f"s3://{BUCKET}/nothing-here")
    proc = run_cli("teacher_server.cli", "serve", "--stores", "s3://no-such-bucket/x", "--port", "0", check=False)
    assert proc.returncode != 0 and "bucket 'no-such-bucket' does not exist" in proc.stderr
