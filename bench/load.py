"""Load test of the teacher service: N concurrent keep-alive clients on loopback for a bounded time.

Builds a synthetic store (ReLU'd Gaussian maps of AlexNet's pool5 shape, about half zeros like ImageNet
AlexNet's: the server sends stored bytes, so only their size matters), starts ``teacher-server serve`` on it as
its own process, then runs ``--clients`` asyncio clients for ``--duration`` seconds, each mixing single GETs
and batch POSTs and checking every frame it gets against the store's checksums. Reports requests, errors (must
be 0), p50/p95/p99 latency, throughput, and the server's RSS at start, after warm-up and at the end (flat
memory). The load generator shares the machine's cores with the server, so on a small machine it is part of
what is measured.

Usage: python -m bench.load [--clients 64] [--duration 60]
Writes bench/results/load.json and prints a Markdown row; exits 1 when any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import httpx
import numpy as np

from bench.common import REPO, machine, percentiles, serve_process
from shared.errors import DataError
from shared.features import decode_batch, encoding
from shared.identity import TeacherIdentity
from teacher_server.reader import ChunkReader
from teacher_server.store import CollectionSpec, FeatureStore, shard_statistics

__all__ = ["build_store", "expected_checksums", "load_test", "run_load"]

COLLECTION = "load"


def build_store(path: Path, frames: int = 2048, shape: tuple[int, int, int] = (256, 6, 6),
                shard_frames: int = 256, seed: int = 0) -> Path:
    """A complete f32-zstd1 store of ``frames`` random ReLU maps (ids ``load.0000000``...), without a CNN."""
    rng = np.random.default_rng(seed)
    teacher = TeacherIdentity(arch="synthetic", weights="random", weights_digest=f"{seed:064x}",
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), out_channels=shape[0])
    spec = CollectionSpec(COLLECTION, tuple(f"{COLLECTION}.{i:07d}" for i in range(frames)), shape, (227, 227))
    col = FeatureStore.create_or_open(path, teacher, encoding("f32-zstd1"), [spec], shard_frames).collections[
        COLLECTION]
    for k in range(col.n_shards):
        feats = np.maximum(rng.standard_normal((len(col.shard_rows(k)), *shape), dtype=np.float32), 0)
        col.write_shard(k, feats[:, None], shard_statistics(feats, feats))  # one view: identity
    col.record_summary()
    return path


def expected_checksums(store: Path) -> dict[str, int]:
    """Frame id -> CRC32C of its stored chunk, read in-process (what every answer is checked against)."""
    reader = ChunkReader([FeatureStore.open(store)])
    try:
        return {fid: google_crc32c.value(reader.read(fid).data) for fid in reader.stores[0].collections[COLLECTION].ids}
    finally:
        reader.close()


def rss_mib(pid: int) -> float:
    """Resident set size of a process from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise DataError(f"no VmRSS in /proc/{pid}/status")


class Mismatch(Exception):
    """An answer that is not what the store holds (wrong status, frame, framing or bytes)."""


@dataclass
class _Tally:
    latency: dict[str, list[float]] = field(default_factory=lambda: {"get": [], "batch": []})
    frames: int = 0
    bytes: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def fail(self, kind: str, err: Exception) -> None:
        self.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {type(err).__name__}: {err}")


def _check(r: httpx.Response, want: list[str], crcs: dict[str, int], batch: bool) -> int:
    """Frames in a correct answer; raises Mismatch (or DataError for bad batch framing) otherwise."""
    if r.status_code != 200:
        raise Mismatch(f"status {r.status_code}: {r.text[:200]}")
    if not batch:
        got = [(want[0], r.content)]
    else:
        entries = decode_batch(r.content)
        if [e.id for e in entries] != want or any(e.status != 200 for e in entries):
            raise Mismatch(f"batch answered {[(e.id, e.status) for e in entries][:4]}... for {want[:4]}...")
        got = [(e.id, e.data) for e in entries]
    for fid, data in got:
        if google_crc32c.value(data) != crcs[fid]:
            raise Mismatch(f"frame {fid}: body checksum differs from the store's")
    return len(got)


async def _client(url: str, crcs: dict[str, int], ids: list[str], deadline: float, batch: int,
                  batch_share: float, rng: random.Random, tally: _Tally) -> None:
    """One keep-alive client: requests back to back until the deadline."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            kind = "batch" if rng.random() < batch_share else "get"
            want = rng.sample(ids, batch) if kind == "batch" else [rng.choice(ids)]
            t = time.perf_counter()
            try:
                if kind == "batch":
                    r = await http.post("/features/batch", json={"ids": want})
                else:
                    r = await http.get(f"/features/{want[0]}")
                seconds = time.perf_counter() - t
                tally.frames += _check(r, want, crcs, kind == "batch")
            except (httpx.HTTPError, Mismatch, DataError) as e:
                tally.fail(kind, e)
                continue
            tally.latency[kind].append(seconds)
            tally.bytes += len(r.content)


async def _sample_rss(pid: int, every: float, out: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while True:
        out.append((round(time.monotonic() - t0, 2), rss_mib(pid)))
        await asyncio.sleep(every)


async def _run(url: str, crcs: dict[str, int], clients: int, duration: float, batch: int, batch_share: float,
               pid: int, seed: int) -> tuple[_Tally, float, list[tuple[float, float]]]:
    tally, rss = _Tally(), []
    ids = sorted(crcs)
    sampler = asyncio.create_task(_sample_rss(pid, max(duration / 60, 0.5), rss))
    t0 = time.monotonic()
    await asyncio.gather(*(_client(url, crcs, ids, t0 + duration, batch, batch_share, random.Random(seed + i), tally)
                           for i in range(clients)))
    elapsed = time.monotonic() - t0
    sampler.cancel()
    return tally, elapsed, rss


def run_load(url: str, crcs: dict[str, int], *, pid: int, clients: int = 64, duration: float = 60.0,
             batch: int = 16, batch_share: float = 0.2, seed: int = 0) -> dict:
    """Drive ``url`` with ``clients`` concurrent clients for ``duration`` seconds; the server's pid for RSS.

    Returns a JSON-ready dict: requests, errors (+ up to 10 samples), latency percentiles in ms (all and per
    kind), requests/s, frames/s, MB/s, and RSS in MiB (start, after the first tenth, end, max, samples).
    """
    rss_start = rss_mib(pid)
    tally, elapsed, rss = asyncio.run(_run(url, crcs, clients, duration, batch, batch_share, pid, seed))
    rss_end = rss_mib(pid)
    every = tally.latency["get"] + tally.latency["batch"]
    requests = len(every) + tally.errors
    warm = next((m for t, m in rss if t >= duration / 10), rss_end)
    return {
        "clients": clients, "duration_s": round(elapsed, 2), "batch": batch, "batch_share": batch_share,
        "requests": requests, "errors": tally.errors, "error_samples": tally.error_samples,
        "latency": percentiles(every) if every else None,
        "by_kind": {k: {"requests": len(v), **(percentiles(v) if v else {})} for k, v in tally.latency.items()},
        "requests_per_s": requests / elapsed, "frames_per_s": tally.frames / elapsed,
        "MB_per_s": tally.bytes / elapsed / 1e6,
        "rss_mib": {"start": rss_start, "warm": warm, "end": rss_end, "max": max([m for _, m in rss] + [rss_end]),
                    "samples": rss},
    }


def load_test(store: Path, **kw) -> dict:
    """Serve ``store`` with ``teacher-server serve`` in its own process and :func:`run_load` against it."""
    crcs = expected_checksums(store)
    with serve_process(store) as (url, proc):
        return run_load(url, crcs, pid=proc.pid, **kw)


def markdown_row(r: dict) -> str:
    lat, rss = r["latency"] or {}, r["rss_mib"]
    return (f"| {r['clients']} | {r['duration_s']:.0f} | {r['requests']:,} | {r['errors']} | "
            f"{lat.get('p50_ms', 0):.1f} | {lat.get('p95_ms', 0):.1f} | {lat.get('p99_ms', 0):.1f} | "
            f"{r['requests_per_s']:,.0f} | {r['frames_per_s']:,.0f} | "
            f"{rss['start']:.0f} → {rss['warm']:.0f} → {rss['end']:.0f} (max {rss['max']:.0f}) |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64, help="concurrent keep-alive clients (default 64)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load; the run stops by itself (default 60)")
    p.add_argument("--frames", type=int, default=2048, help="frames in the synthetic store (default 2048)")
    p.add_argument("--batch", type=int, default=16, help="ids per batch request (default 16)")
    p.add_argument("--batch-share", type=float, default=0.2, help="fraction of requests that are batches (0.2)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "load.json")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "store", frames=args.frames)
        result = load_test(store, clients=args.clients, duration=args.duration, batch=args.batch,
                           batch_share=args.batch_share)
    result.update(machine=machine(), frames_in_store=args.frames, loadavg_before=load_before,
                  loadavg_after=os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Machine: {result['machine']}; load average before {load_before[0]:.2f}, after "
          f"{result['loadavg_after'][0]:.2f}; {args.frames} frames; batches of {args.batch} = "
          f"{args.batch_share:.0%} of requests\n")
    print("| clients | s | requests | errors | p50 ms | p95 ms | p99 ms | req/s | frames/s | server RSS MiB "
          "start → warm → end |\n|---|---|---|---|---|---|---|---|---|---|")
    print(markdown_row(result))
    for s in result["error_samples"]:
        print(f"error: {s}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
