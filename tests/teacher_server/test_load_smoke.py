"""The load benchmark (bench/load.py) end to end on a small store: it runs, finds no errors, and would see them."""

from __future__ import annotations

import json

import pytest

from bench.common import serve_process
from bench.load import build_store, expected_checksums, load_test, run_load


@pytest.fixture(scope="module")
def load_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("load") / "store", frames=64, shard_frames=16)


def test_load_smoke(load_store):
    result = load_test(load_store, clients=8, duration=3)
    json.dumps(result)  # what main() writes
    assert result["errors"] == 0 and result["error_samples"] == [], result["error_samples"]
    kinds = result["by_kind"]
    assert result["requests"] == kinds["get"]["requests"] + kinds["batch"]["requests"] > 0
    lat = result["latency"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    assert result["frames_per_s"] >= result["requests_per_s"] > 0
    rss = result["rss_mib"]
    assert 0 < rss["start"] <= rss["max"] and 0 < rss["end"] <= rss["max"] and rss["samples"]


def test_load_counts_wrong_answers_as_errors(load_store):
    """Checked against wrong checksums, every answer is an error: the 0 above means the bytes were right."""
    wrong = {fid: crc ^ 1 for fid, crc in expected_checksums(load_store).items()}
    with serve_process(load_store) as (url, proc):
        result = run_load(url, wrong, pid=proc.pid, clients=2, duration=1)
    assert result["requests"] == result["errors"] > 0
    assert "checksum differs" in result["error_samples"][0]
