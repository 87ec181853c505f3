"""Shared pieces of the benchmarks: machine description, a served store in a subprocess, timing stats."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.atomic import write_json_atomic
from xmodal_pipeline.procs import free_port, poll_healthy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def write_results(name: str, results: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (atomic): what a benchmark measured, beside the table it prints."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(RESULTS / f"{name}.json", results, indent=1)


def seed_cell(m: dict[str, float]) -> str:
    """A ``seed_stats`` entry of fractions as a table cell: mean ± sd in %."""
    return f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}"


def machine() -> str:
    """One line naming the machine the numbers came from."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages: on a shared machine, what else ran while a bench did."""
    return [round(v, 2) for v in os.getloadavg()]


def rgb_subset(manifest: Path, frames: int, out: Path) -> tuple[Path, str]:
    """Write the first ``frames`` frames of ``manifest``, RGB only (absolute paths), as the manifest ``out``.

    Returns ``out`` and the dataset's name (the collection a precompute of it fills).
    """
    from shared.manifest import read_manifest, write_manifest

    m = read_manifest(manifest)
    records = [f.model_copy(update={"rgb": str(m.path(f.rgb)), "depth": None, "raw_depth": None, "hha": None,
                                    "rgb_next": None, "flow": None, "intrinsics": None}) for f in m][:frames]
    write_manifest(out, m.header, records)
    return out, m.header.dataset


class MemoryTargets:
    """Every teacher map of one collection in RAM, with the ``get_many`` of ``TeacherClient`` (no service)."""

    def __init__(self, store: Path, dataset: str) -> None:
        from teacher_server.store import FeatureStore

        col = FeatureStore.open(store).collections[dataset]
        self.maps = dict(zip(col.ids, col.read(slice(None)), strict=True))

    def get_many(self, ids: list[str]) -> np.ndarray:
        return np.stack([self.maps[i] for i in ids])


def cpu_seconds_of_descendants() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process's descendants, summed per role (replica, nginx).

    CPU time per frame is what sizes a deployment; on a shared machine it moves far less than wall-clock rates.
    """
    parent, cpu, role = {}, {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            cmd = (stat.parent / "cmdline").read_bytes()
            role[pid] = "replica" if b"teacher_server.cli" in cmd else "nginx" if b"nginx" in cmd else "other"
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - mine
        mine |= frontier
    totals = {"replica": 0.0, "nginx": 0.0}
    for pid in mine:
        if role[pid] in totals:
            totals[role[pid]] += cpu[pid]
    return totals


def percentiles(seconds: list[float]) -> dict[str, float]:
    """The 50th, 95th and 99th percentiles of ``seconds``, in milliseconds (``p50_ms`` ...)."""
    a = np.asarray(seconds) * 1000
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 95, 99)}


@contextlib.contextmanager
def serve_process(store: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``teacher-server serve`` in its own process on a free port of 127.0.0.1; yields the URL and the process,
    stops it after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "teacher_server.cli", "serve", "--stores", str(store),
                             "--port", str(port), "--log-level", "warning"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        poll_healthy(url, 60, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def served(store: Path) -> Iterator[str]:
    """:func:`serve_process` for callers that need only the URL."""
    with serve_process(store) as (url, _):
        yield url
