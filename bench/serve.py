"""Benchmark the teacher service: frames/s, MB/s and latency on loopback vs the in-process ceiling,
and compression ratio / error per encoding on real teacher outputs of the synthetic set.

Usage: python -m bench.serve --manifest runs/demo/data/synth/manifest.jsonl --teacher runs/demo/runs/rgb/checkpoint.pt
Prints Markdown tables (paste into BENCHMARKS.md) and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import httpx
import numcodecs
import numpy as np

from bench.common import REPO, cpu_seconds_of_descendants, load_average, machine, percentiles, rgb_subset, served
from shared.client import TeacherClient
from shared.features import BATCH_MEDIA_TYPE, FeatureEncoding, chunk_crc, decode_batch, decode_chunk, encoding
from shared.nets.teachers import LoadedTeacher, load_teacher
from teacher_server.precompute import precompute
from teacher_server.reader import ChunkReader
from teacher_server.store import FeatureStore


def codec_table(feats: np.ndarray) -> list[dict]:
    """Ratio and error of candidate encodings on real maps (N, C, H, W) float32."""
    raw = feats.nbytes
    peak = np.abs(feats).reshape(len(feats), -1).max(axis=1)[:, None]
    cands = {
        "float32 + zstd 1 (default)": (feats, numcodecs.Zstd(level=1, checksum=True)),
        "float32 + zstd 3": (feats, numcodecs.Zstd(level=3)),
        "float32 + blosc-zstd byte-shuffle": (feats, numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE)),
        "float32 + blosc-zstd bit-shuffle": (feats, numcodecs.Blosc("zstd", 1, numcodecs.Blosc.BITSHUFFLE)),
        "float16 + zstd 1 (lossy option)": (feats.astype(np.float16), numcodecs.Zstd(level=1, checksum=True)),
        "bfloat16 (uint16) + zstd 1": ((feats.view(np.uint32) >> 16).astype(np.uint16), numcodecs.Zstd(level=1)),
    }
    rows = []
    for name, (arr, codec) in cands.items():
        size = sum(len(codec.encode(np.ascontiguousarray(a))) for a in arr)
        t = time.perf_counter()
        for a in arr[:200]:
            codec.decode(codec.encode(np.ascontiguousarray(a)))
        per = (time.perf_counter() - t) / min(len(arr), 200)
        back = arr.astype(np.float32) if arr.dtype != np.uint16 else (arr.astype(np.uint32) << 16).view(np.float32)
        err = np.abs(back - feats).reshape(len(feats), -1)
        rows.append({"encoding": name, "ratio": raw / size, "max_rel_error": float((err / np.maximum(peak, 1e-12))
                     .max()), "mean_abs_error": float(err.mean()), "encode+decode_us": per * 1e6})
    return rows


def in_process(reader: ChunkReader, enc: FeatureEncoding, ids: list[str], batch: int) -> dict:
    """Ceiling: what ``get_many`` does without HTTP — the server's own read path (pread with cached shard index),
    then each map decoded into its row of a fresh (batch, C, H, W) array, batch after batch."""
    parts = [ids[i : i + batch] for i in range(0, len(ids) - batch + 1, batch)]
    t = time.perf_counter()
    nbytes = 0
    for part in parts:
        out = np.empty((len(part), *reader.locate(part[0])[1].shape), dtype=np.float32)
        for k, fid in enumerate(part):
            c = reader.read(fid)
            decode_chunk(c.data, c.shape, enc, out=out[k])
            nbytes += len(c.data)
    dt = time.perf_counter() - t
    frames = sum(len(p) for p in parts)
    return {"frames_per_s": frames / dt, "bytes_per_frame": nbytes / frames}


def hot_path_costs(reader: ChunkReader, enc: FeatureEncoding, ids: list[str]) -> dict:
    """Per-frame cost of each step of the serving path on real chunks, best of 3 passes: the read (pread with the
    shard index cached, CRC32C check included), the CRC32C check alone, and the client's decode."""
    chunks = [reader.read(fid) for fid in ids]
    timings: dict[str, float] = {}
    steps = {"read_us_per_frame": lambda: [reader.read(fid) for fid in ids],
             "crc32c_us_per_frame": lambda: [chunk_crc(c.data) for c in chunks],
             "decode_us_per_frame": lambda: [decode_chunk(c.data, c.shape, enc) for c in chunks]}
    for name, step in steps.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - t)
        timings[name] = best / len(ids) * 1e6
    return {**timings, "chunk_bytes": float(np.mean([len(c.data) for c in chunks]))}


def http_single(url: str, ids: list[str]) -> dict:
    """``TeacherClient.get`` per frame (one GET, decode included): the latency a user of the client sees."""
    lat = []
    with TeacherClient(url) as c:
        c.get(ids[0])
        t0 = time.perf_counter()
        for fid in ids:
            t = time.perf_counter()
            c.get(fid)
            lat.append(time.perf_counter() - t)
        dt = time.perf_counter() - t0
    return {"frames_per_s": len(lat) / dt, **percentiles(lat)}


_BATCH_HEADERS = {"Accept": BATCH_MEDIA_TYPE, "Content-Type": "application/json"}


class HttpxBatches:
    """``get_many``'s batch requests, framing and decode through ``httpx.HTTPTransport`` (which ``TeacherClient``
    used first; one keep-alive pool per client, the same 30-s timeouts): the side-by-side case for the client's
    urllib3 transport (``shared/connections.py``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        with TeacherClient(url) as c:
            self.enc = c.encoding
        self.transport = httpx.HTTPTransport()
        self.timeout = httpx.Timeout(30.0).as_dict()

    def info(self) -> None:
        return None

    def get_many(self, ids: list[str]) -> np.ndarray:
        request = httpx.Request("POST", self.url + "/features/batch", headers=_BATCH_HEADERS,
                                content=json.dumps({"ids": ids, "strict": False}).encode(),
                                extensions={"timeout": self.timeout})
        entries = decode_batch(self.transport.handle_request(request).read())
        out = np.empty((len(ids), *(entries[0].shape or ())), dtype=np.float32)
        for k, entry in enumerate(entries):
            decode_chunk(entry.data, entry.shape or (), self.enc, out=out[k])
        return out

    def close(self) -> None:
        self.transport.close()


def http_batch(url: str, ids: list[str], batch: int, in_flight: int, frame_bytes: float,
               make_client: Callable[[str], TeacherClient | HttpxBatches] = TeacherClient) -> dict:
    """``get_many`` over consecutive batches (decode included), ``in_flight`` requests at a time: one client per
    thread, as the trainer has one per DataLoader worker, so the server prepares the next batch while this
    process decodes the last one."""
    parts = [ids[i : i + batch] for i in range(0, len(ids) - batch + 1, batch)]
    local = threading.local()
    clients: list[TeacherClient | HttpxBatches] = []

    def fetch(part: list[str]) -> float:
        if not hasattr(local, "client"):
            local.client = make_client(url)
            local.client.info()
            clients.append(local.client)
        t = time.perf_counter()
        local.client.get_many(part)
        return time.perf_counter() - t

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(fetch, parts[:in_flight]))  # connect and read /info outside the timing
        cpu0, t0 = time.process_time(), time.perf_counter()
        lat = list(pool.map(fetch, parts))
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for c in clients:
        c.close()
    frames = sum(len(p) for p in parts)
    return {"frames_per_s": frames / dt, "MB_per_s": frames * frame_bytes / dt / 1e6, "batch": batch,
            "in_flight": in_flight, "client_cpu_us_per_frame": cpu / frames * 1e6, **percentiles(lat)}


_WORKER_CLIENT: TeacherClient | None = None


def _worker_client(url: str) -> None:
    global _WORKER_CLIENT
    _WORKER_CLIENT = TeacherClient(url)
    _WORKER_CLIENT.info()


def _worker_fetch(part: list[str]) -> int:
    assert _WORKER_CLIENT is not None
    _WORKER_CLIENT.get_many(part)
    return len(part)


def http_batch_processes(pool: ProcessPoolExecutor, ids: list[str], batch: int, frame_bytes: float) -> dict:
    """``get_many`` from a pool of client processes (one client each), as the trainer's DataLoader workers
    fetch: decode runs in parallel instead of under one GIL."""
    parts = [ids[i : i + batch] for i in range(0, len(ids) - batch + 1, batch)]
    t = time.perf_counter()
    frames = sum(pool.map(_worker_fetch, parts))
    dt = time.perf_counter() - t
    return {"frames_per_s": frames / dt, "MB_per_s": frames * frame_bytes / dt / 1e6}


def client_pairs(url: str, ids: list[str], batch: int, frame_bytes: float, pairs: int) -> dict[str, dict]:
    """``TeacherClient`` against httpx's transport on the same batches, 2 in flight, run back to back ``pairs``
    times: on a shared VM whose speed drifts within seconds, the ratio within a pair is steadier than one taken
    across a whole round. Keyed by library: the median and range of (library / ours) in frames/s and in client
    CPU per frame."""
    speed, cpu = [], []
    for _ in range(pairs):
        ours = http_batch(url, ids, batch, 2, frame_bytes)
        other = http_batch(url, ids, batch, 2, frame_bytes, HttpxBatches)
        speed.append(other["frames_per_s"] / ours["frames_per_s"])
        cpu.append(other["client_cpu_us_per_frame"] / ours["client_cpu_us_per_frame"])
    return {"httpx": {"speed_vs_ours": float(np.median(speed)), "speed_vs_ours_range": [min(speed), max(speed)],
                      "client_cpu_vs_ours": float(np.median(cpu)), "client_cpu_vs_ours_range": [min(cpu), max(cpu)],
                      "pairs": pairs}}


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--teacher", type=str, required=True, help="checkpoint path, or 'alexnet'/'vgg16' (random)")
    p.add_argument("--frames", type=int, default=1000, help="frames to precompute and read")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over every path (medians reported)")
    p.add_argument("--single-frames", type=int, default=500, help="frames fetched one GET at a time per round")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--client-pairs", type=int, default=20,
                   help="back-to-back pairs of TeacherClient vs the httpx transport (2 in flight)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    return p.parse_args()


def bench_store(tmp: Path, manifest: Path, frames: int, teacher: LoadedTeacher) -> tuple[Path, str, float]:
    """Precompute the first ``frames`` frames of ``manifest`` (RGB only) into ``tmp``/store.

    Returns the store's path, the dataset (its collection) and the precompute rate in frames/s.
    """
    sub, dataset = rgb_subset(manifest, frames, tmp / "manifest.jsonl")
    store = tmp / "store"
    t = time.perf_counter()
    summary = precompute(store, [sub], teacher, encoding("f32-zstd1"), progress=False)
    return store, dataset, summary.frames_computed / (time.perf_counter() - t)


def _paths(url: str, pool: ProcessPoolExecutor, reader: ChunkReader, enc: FeatureEncoding, ids: list[str],
           args: argparse.Namespace, frame_bytes: float) -> dict[str, Callable[[], dict]]:
    """Every measured read path, keyed as in the results (one call = one run of that path)."""
    return {
        "in_process": lambda: in_process(reader, enc, ids, args.batch),
        "http_single": lambda: http_single(url, ids[: args.single_frames]),
        **{f"http_batch_{n}": functools.partial(http_batch, url, ids, args.batch, n, frame_bytes) for n in (1, 2)},
        "http_batch_procs": functools.partial(http_batch_processes, pool, ids, args.batch, frame_bytes),
        **{f"httpx_batch_{n}": functools.partial(http_batch, url, ids, args.batch, n, frame_bytes, HttpxBatches)
           for n in (1, 2)},
    }


def interleaved_rounds(paths: dict[str, Callable[[], dict]], rounds: int, batch_frames: int) -> dict[str, list[dict]]:
    """Each path's runs, ``rounds`` of them; batch paths also record the served replica's CPU seconds and the
    ``batch_frames`` they read.

    Interleaved: this VM's speed drifts by up to 2x over minutes, so every path is measured in every round and
    each ratio is taken within a round (see :func:`summarise`).
    """
    per_round: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, fn in paths.items():
            before = cpu_seconds_of_descendants()["replica"]
            run = fn()
            if "batch" in key:  # the server's CPU per frame sizes a deployment
                run["server_cpu_s"] = cpu_seconds_of_descendants()["replica"] - before
                run["frames"] = batch_frames
            per_round[key].append(run)
    return per_round


def summarise(per_round: dict[str, list[dict]]) -> dict[str, dict]:
    """Per path: the median over rounds of each float metric, the speed vs the in-process ceiling of the same
    round (median and range), the rounds themselves, and the server CPU per frame (batch paths)."""
    results = {}
    for key, runs in per_round.items():
        results[key] = {m: float(np.median([r[m] for r in runs])) for m in runs[0]
                        if isinstance(runs[0][m], float) and m != "server_cpu_s"}  # server CPU: summed below
        ratios = [r["frames_per_s"] / c["frames_per_s"] for r, c in zip(runs, per_round["in_process"], strict=True)]
        results[key].update(vs_ceiling=float(np.median(ratios)), vs_ceiling_range=[min(ratios), max(ratios)],
                            rounds=runs)
        if "server_cpu_s" in runs[0]:  # summed over rounds: /proc counts in 10-ms ticks, a round only a few
            results[key]["server_cpu_us_per_frame"] = sum(r["server_cpu_s"] for r in runs) / sum(
                r["frames"] for r in runs) * 1e6
    return results


def print_tables(results: dict, batch: int) -> None:
    """The Markdown tables of BENCHMARKS.md: per-frame hot path, codecs, and every read path."""
    print(f"Machine: {results['machine']}; load average {results['load_average_start']} -> "
          f"{results['load_average_end']}; teacher {results['teacher']}; {results['frames']} frames of "
          f"{tuple(results['map_shape'])}, {results['zero_fraction']:.0%} zeros\n")
    hot = results["hot_path"]
    print(f"Per frame ({hot['chunk_bytes']:.0f} B chunks, best of 3): server read incl. CRC32C check "
          f"{hot['read_us_per_frame']:.2f} µs, of which CRC32C {hot['crc32c_us_per_frame']:.2f} µs; client decode "
          f"{hot['decode_us_per_frame']:.2f} µs\n")
    print("| encoding | ratio vs float32 | max rel. error | mean abs error | encode+decode µs/frame |")
    print("|---|---|---|---|---|")
    for r in results["codecs"]:
        print(f"| {r['encoding']} | {r['ratio']:.2f}x | {r['max_rel_error']:.1e} | {r['mean_abs_error']:.1e} | "
              f"{r['encode+decode_us']:.0f} |")
    labels = {
        "in_process": "in-process pread + decode (ceiling)",
        "http_single": "single GET, `TeacherClient.get`",
        "http_batch_1": f"batch of {batch}, `TeacherClient.get_many`, 1 in flight",
        "http_batch_2": f"batch of {batch}, `TeacherClient.get_many`, 2 in flight",
        "http_batch_procs": f"batch of {batch}, `TeacherClient.get_many`, 2 client processes",
        **{f"httpx_batch_{n}": f"batch of {batch}, same requests through `httpx.HTTPTransport`, {n} in flight"
           for n in (1, 2)},
    }
    print("\n| path | frames/s | MB/s | p50 ms | p99 ms | vs ceiling (range over rounds) | client CPU µs/frame "
          "| server CPU µs/frame |\n|---|---|---|---|---|---|---|---|")
    for key, label in labels.items():
        r = results[key]
        lo, hi = r["vs_ceiling_range"]
        cells = [f"{r['frames_per_s']:.0f}", *(f"{r[m]:{f}}" if m in r else "" for m, f in (
            ("MB_per_s", ".1f"), ("p50_ms", ".2f"), ("p99_ms", ".2f"))),
            f"{r['vs_ceiling']:.2f} ({lo:.2f}–{hi:.2f})",
            *(f"{r[m]:.0f}" if m in r else "" for m in ("client_cpu_us_per_frame", "server_cpu_us_per_frame"))]
        print(f"| {label} | {' | '.join(cells)} |")
    print(f"\nBack-to-back pairs, batch of {batch}, 2 in flight (library / `TeacherClient`, median and range):\n")
    print("| transport | pairs | frames/s vs ours | client CPU per frame vs ours |\n|---|---|---|---|")
    for name, r in results["client_pairs"].items():
        (slo, shi), (clo, chi) = r["speed_vs_ours_range"], r["client_cpu_vs_ours_range"]
        print(f"| {name} | {r['pairs']} | {r['speed_vs_ours']:.3f} ({slo:.2f}–{shi:.2f}) | "
              f"{r['client_cpu_vs_ours']:.3f} ({clo:.2f}–{chi:.2f}) |")


def main() -> None:
    args = _parse_args()
    teacher = (load_teacher("checkpoint", args.teacher) if Path(args.teacher).is_file()
               else load_teacher(args.teacher, "random"))
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        store, dataset, precompute_rate = bench_store(Path(tmp), args.manifest, args.frames, teacher)
        opened = FeatureStore.open(store)
        col = opened.collections[dataset]
        feats = col.read(slice(None))
        ids = random.Random(0).sample(col.ids, len(col.ids))  # trainers draw batches of random frames
        results = {
            "machine": machine(), "teacher": teacher.identity.short_id(), "frames": len(ids),
            "map_shape": list(col.shape), "precompute_frames_per_s": precompute_rate,
            "zero_fraction": float((feats == 0).mean()), "codecs": codec_table(feats),
        }
        reader, enc = ChunkReader([opened]), opened.encoding
        frame_bytes = in_process(reader, enc, ids, args.batch)["bytes_per_frame"]
        results["hot_path"] = hot_path_costs(reader, enc, ids)
        with served(store) as url, ProcessPoolExecutor(2, initializer=_worker_client, initargs=(url,)) as pool:
            list(pool.map(_worker_fetch, [ids[: args.batch]] * 2))  # start and connect both workers
            per_round = interleaved_rounds(_paths(url, pool, reader, enc, ids, args, frame_bytes), args.rounds,
                                           len(ids) // args.batch * args.batch)
            results["client_pairs"] = client_pairs(url, ids, args.batch, frame_bytes, args.client_pairs)
        reader.close()
    results.update(summarise(per_round), load_average_start=load_start, load_average_end=load_average())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results, args.batch)


if __name__ == "__main__":
    main()
