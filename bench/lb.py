"""Benchmark serve replicas behind nginx: aggregate frames/s of several clients, one server direct vs nginx
over 1 and N replicas of the same store (the config rendered by ``teacher_server.nginx_lb``), interleaved.

Usage: python -m bench.lb --store runs/demo/store --replicas 2 --clients 4
Prints a Markdown table and writes bench/results/lb.json. Needs nginx (Debian: apt-get install nginx-light).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import REPO, cpu_seconds_of_descendants, machine, served
from bench.serve import http_batch
from teacher_server.nginx_lb import NginxLbSettings, find_nginx, start_nginx
from teacher_server.store import FeatureStore
from xmodal_pipeline.procs import free_port, poll_healthy


@contextlib.contextmanager
def load_balancer(replica_urls: list[str], nginx: str) -> Iterator[str]:
    """nginx on 127.0.0.1 over running replicas, with the repo's rendered config; yields its URL."""
    with tempfile.TemporaryDirectory() as prefix:
        port = free_port()
        settings = NginxLbSettings(replicas=[u.removeprefix("http://") for u in replica_urls],
                                   listen=f"127.0.0.1:{port}")
        proc = start_nginx(Path(prefix), settings, nginx=nginx)
        try:
            url = f"http://127.0.0.1:{port}"
            poll_healthy(url, 30)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def concurrent_batches(url: str, ids: list[str], clients: int, rounds: int, batch: int, frame_bytes: float) -> dict:
    """``clients`` processes each reading every frame ``rounds`` times in batches; rates summed over clients,
    plus the CPU time the replicas and nginx spent per frame."""
    before = cpu_seconds_of_descendants()
    with ProcessPoolExecutor(clients) as pool:
        runs = list(pool.map(http_batch, *([v] * clients for v in (url, ids * rounds, batch, 1, frame_bytes))))
    after = cpu_seconds_of_descendants()
    frames = clients * (len(ids) * rounds // batch) * batch
    fps = sum(r["frames_per_s"] for r in runs)
    mbs = sum(r["MB_per_s"] for r in runs)
    return {"frames_per_s": fps, "MB_per_s": mbs, "bytes_per_frame": mbs * 1e6 / fps,
            "p50_ms": max(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
            **{f"{k}_cpu_us_per_frame": (after[k] - before[k]) / frames * 1e6 for k in after}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=REPO / "runs" / "demo" / "store")
    p.add_argument("--replicas", type=int, default=2, help="replicas behind nginx (at least 2)")
    p.add_argument("--clients", type=int, default=4, help="concurrent client processes (like students' loaders)")
    p.add_argument("--frames", type=int, default=1000, help="frames each client reads per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per path (the median is reported)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lb.json")
    args = p.parse_args()
    if args.replicas < 2:
        raise SystemExit("--replicas must be at least 2 (1 replica behind nginx is measured anyway)")
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx is not installed (Debian: apt-get install nginx-light)")
    col = next(iter(FeatureStore.open(args.store).collections.values()))
    summary = col.summary()
    frame_bytes = summary["stored_bytes"] / summary["frames_done"]
    ids = col.ids[: args.frames]
    run = {"clients": args.clients, "rounds": args.rounds, "batch": args.batch, "repeats": args.repeats}
    results = {"machine": machine(), "store": str(args.store), "frames": len(ids), "map_shape": list(col.shape), **run}
    samples: dict[str, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(served(args.store)) for _ in range(args.replicas)]
        paths = {"1 server, direct": replicas[0],
                 "nginx → 1 replica": stack.enter_context(load_balancer(replicas[:1], nginx)),
                 f"nginx → {args.replicas} replicas": stack.enter_context(load_balancer(replicas, nginx))}
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every path alike
            for name, url in paths.items():
                samples.setdefault(name, []).append(
                    concurrent_batches(url, ids, args.clients, args.rounds, args.batch, frame_bytes))
    results["paths"] = {name: sorted(runs, key=lambda r: r["frames_per_s"])[len(runs) // 2]
                        for name, runs in samples.items()}  # the median run by frames/s
    results["samples"] = samples
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    base = results["paths"]["1 server, direct"]["frames_per_s"]
    print(f"Machine: {results['machine']}; {len(ids)} frames of {col.shape}; {args.clients} clients, "
          f"batches of {args.batch}; median of {args.repeats} interleaved runs\n")
    print("| path | frames/s | MB/s | bytes/frame | worst client p50 ms | p99 ms | vs direct | replica CPU µs/frame "
          "| nginx CPU µs/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results["paths"].items():
        print(f"| {name} | {r['frames_per_s']:.0f} | {r['MB_per_s']:.1f} | {r['bytes_per_frame']:.0f} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['frames_per_s'] / base:.2f} | "
              f"{r['replica_cpu_us_per_frame']:.0f} | {r['nginx_cpu_us_per_frame']:.0f} |")


if __name__ == "__main__":
    main()
