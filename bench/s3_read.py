"""Benchmark the serving read path on an S3 store (moto's server on loopback) against the same store on disk.

The local store (e.g. the demo's) is uploaded object for object under ``s3://<bucket>/store`` of a moto server
started here, then both are read through the server's own path (``ChunkReader``: cached shard index + one
``pread`` / one ranged GET per frame, plus the client's decode), single-threaded and from a thread pool (the
server runs sync handlers in one), and over HTTP in batches through ``teacher-server serve``.
moto is a Python server on this machine: its per-request cost, not S3's, bounds the S3 numbers.

Usage: python -m bench.s3_read --store runs/demo/store
Prints a Markdown table and writes bench/results/s3_read.json.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import REPO, machine, served
from bench.serve import http_batch, in_process
from shared.features import decode_chunk
from teacher_server.reader import ChunkReader
from teacher_server.store import FeatureStore
from tests.servers import moto_s3

BUCKET = "xmodal-bench"


def upload(local: Path, url: str) -> int:
    """Copy every file of a local store to the S3 location (same keys); returns bytes uploaded."""
    import boto3

    s3, prefix, total = boto3.client("s3"), url.removeprefix(f"s3://{BUCKET}/"), 0
    for path in sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")):
        body = path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=body)
        total += len(body)
    return total


def threaded(store_url: str, ids: list[str], threads: int) -> dict:
    """Frames/s with ``threads`` concurrent readers sharing one ChunkReader (as the server's thread pool does)."""
    store = FeatureStore.open(store_url)
    reader = ChunkReader([store])
    enc = store.encoding

    def one(fid: str) -> None:
        c = reader.read(fid)
        decode_chunk(c.data, c.shape, enc)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, ids[: threads * 4]))  # shard indexes cached, threads started
        t = time.perf_counter()
        list(pool.map(one, ids))
        dt = time.perf_counter() - t
    reader.close()
    return {"frames_per_s": len(ids) / dt, "threads": threads}


def request_floor(store_url: str, n: int = 300) -> dict:
    """Requests/s of one 1 KiB ranged read of a shard alone: the backend's per-request cost, no reader logic."""
    store = FeatureStore.open(store_url)
    col = next(iter(store.collections.values()))
    key = col.shard_key(0)
    t = time.perf_counter()
    for _ in range(n):
        blob, _tail = store.objects.open_tail(key, 1024)
        blob.close()
    return {"frames_per_s": n / (time.perf_counter() - t)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True, help="a local feature store (e.g. runs/demo/store)")
    p.add_argument("--frames", type=int, default=2000, help="frames to read per measurement")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "s3_read.json")
    args = p.parse_args()
    store = FeatureStore.open(args.store)
    ids = [fid for col in store.collections.values() for fid, done in zip(col.ids, col.done(), strict=True)
           if done][: args.frames]
    results: dict = {"machine": machine(), "frames": len(ids), "local": {}, "s3": {}}
    with moto_s3(BUCKET):
        url = f"s3://{BUCKET}/store"
        results["uploaded_bytes"] = upload(args.store, url)
        for name, where in (("local", str(args.store)), ("s3", url)):
            t = time.perf_counter()
            store = FeatureStore.open(where)
            results[name]["open_s"] = time.perf_counter() - t
            results[name]["request_floor"] = request_floor(where)
            reader = ChunkReader([store])
            results[name]["single_thread"] = single = in_process(reader, store.encoding, ids, args.batch)
            reader.close()
            results[name]["threaded"] = threaded(where, ids, args.threads)
            with served(where) as base:
                results[name]["http_batch"] = http_batch(base, ids, args.batch, 1, single["bytes_per_frame"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Machine: {results['machine']}; {len(ids)} frames of {args.store}, "
          f"{results['uploaded_bytes'] / 1e6:.1f} MB uploaded to moto\n")
    print("| read path (frames/s) | local | s3 (moto) | s3 / local |\n|---|---|---|---|")
    rows = [("one 1 KiB ranged read alone (backend floor, reads/s)", "request_floor"),
            (f"ChunkReader + decode into batches of {args.batch}, 1 thread", "single_thread"),
            (f"ChunkReader + decode, {args.threads} threads", "threaded"),
            (f"HTTP batch of {args.batch} via serve", "http_batch")]
    for label, key in rows:
        lo, s3 = results["local"][key]["frames_per_s"], results["s3"][key]["frames_per_s"]
        print(f"| {label} | {lo:.0f} | {s3:.0f} | {s3 / lo:.3f} |")
    print(f"| open store (s) | {results['local']['open_s']:.2f} | {results['s3']['open_s']:.2f} | |")


if __name__ == "__main__":
    main()
