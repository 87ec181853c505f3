"""The serving benchmarks run end to end on a small store (no timing is asserted: they are benchmarks, not tests)."""

from __future__ import annotations

import json
import os

import pytest

from teacher_server.nginx_lb import find_nginx
from tests.servers import run_cli

pytestmark = pytest.mark.slow


def test_bench_serve_measures_every_path(tmp_path, dataset, teacher_ckpt):
    out = tmp_path / "serve.json"
    run_cli("bench.serve", "--manifest", str(dataset), "--teacher", str(teacher_ckpt), "--frames", "32",
            "--rounds", "1", "--single-frames", "4", "--batch", "8", "--client-pairs", "2", "--out", str(out))
    result = json.loads(out.read_text())
    paths = ["in_process", "http_single", "http_batch_1", "http_batch_2", "http_batch_procs", "httpx_batch_1",
             "httpx_batch_2"]
    assert all(result[p]["frames_per_s"] > 0 and len(result[p]["rounds"]) == 1 for p in paths)
    assert result["in_process"]["vs_ceiling"] == 1.0
    assert all(result[p]["server_cpu_us_per_frame"] >= 0 for p in paths if "batch" in p)
    assert result["codecs"][0]["max_rel_error"] == 0.0  # the lossless default
    assert len(result["load_average_start"]) == 3
    assert result["client_pairs"]["httpx"]["pairs"] == 2 and result["client_pairs"]["httpx"]["speed_vs_ours"] > 0


def test_bench_precompute_measures_every_stage(tmp_path, dataset, teacher_ckpt):
    out = tmp_path / "precompute.json"
    run_cli("bench.precompute", "--manifest", str(dataset), "--teacher", str(teacher_ckpt), "--frames", "12",
            "--rounds", "2", "--batch-size", "4", "--shard-frames", "8", "--loader-workers", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["frames"] == 12 and result["views"] == ["identity", "mirror"] and len(result["rounds"]) == 2
    for r in result["rounds"]:
        assert all(r[k] > 0 for k in ("forward", "loader", "writer", "precompute"))
        assert r["pipelined_ideal"] == pytest.approx(1 / (1 / r["forward"] + 1 / r["loader"]))
        assert r["ratio_vs_pipelined_ideal"] == pytest.approx(r["precompute"] / r["pipelined_ideal"])
        assert "loader_all_cores" not in r  # a CPU device: forward and loader share the cores
    assert result["ratio_vs_pipelined_ideal"] == result["median"]["ratio_vs_pipelined_ideal"]
    assert result["openmp"] == {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}  # as the CLI runs


def test_bench_s3_read_runs_against_moto(tmp_path, store_path):
    out = tmp_path / "s3.json"
    run_cli("bench.s3_read", "--store", str(store_path), "--frames", "16", "--threads", "2", "--batch", "8",
            "--out", str(out))
    result = json.loads(out.read_text())
    for where in ("local", "s3"):
        assert all(result[where][k]["frames_per_s"] > 0 for k in ("single_thread", "threaded", "http_batch"))


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (.ci/run installs it when run as root)")
def test_bench_lb_runs_through_nginx(tmp_path, store_path):
    out = tmp_path / "lb.json"
    run_cli("bench.lb", "--store", str(store_path), "--replicas", "2", "--clients", "2", "--frames", "16",
            "--rounds", "1", "--batch", "8", "--repeats", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert len(result["paths"]) == 3 and all(r["frames_per_s"] > 0 for r in result["paths"].values())


def test_bench_compression_runs_every_stage(tmp_path, synth_tiny, synth_teacher_ckpt):
    out = tmp_path / "compression.json"
    run_cli("bench.compression", "--manifest", str(synth_tiny), "--teacher", str(synth_teacher_ckpt), "--work",
            str(tmp_path / "work"), "--encodings", "f32-zstd1", "q8-zstd1", "--profile", "tiny", "--transfer-seeds",
            "0", "--detect-seeds", "0", "--out", str(out), timeout=900)
    rows = json.loads(out.read_text())["encodings"]
    assert rows["f32-zstd1"]["codec"]["relative_rms_error"] == 0.0 and rows["f32-zstd1"]["codec"]["exact_zeros_kept"]
    q8 = rows["q8-zstd1"]
    assert 0 < q8["codec"]["relative_rms_error"] < 0.01 and q8["store"]["ratio"] > rows["f32-zstd1"]["store"]["ratio"]
    assert q8["wire"]["wire_bytes_per_frame"] > q8["codec"]["chunk_bytes"]  # framing on top of the chunk
    for r in rows.values():
        down = r["downstream"]
        assert down["heldout_residual"]["mean"] > 0 and len(down["heldout_residual"]["runs"]) == 1
        assert len(down["paired_delta"]) == 1 and len(down["map_finetuned"]["runs"]) == 1
    assert rows["f32-zstd1"]["downstream"]["paired_delta"] == [0.0]
