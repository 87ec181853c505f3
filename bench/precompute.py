"""Benchmark the precompute pipeline: its stages alone and precompute itself, side by side in interleaved rounds.

- forward:    the teacher over precompute's batches already in device memory (both views when mirror is on);
- loader:     the DataLoader precompute builds (same batches, workers and pinning), batches consumed and dropped;
              on a GPU also with one worker per core (``loader_all_cores``: what the GPU's host can decode);
- writer:     the shard writer alone on the forward's maps (statistics, dtype, zstd, durable shard writes);
- precompute: ``teacher_server.precompute.precompute`` into a fresh store (what ``teacher-server precompute`` runs).

Ideal rate of a perfect pipeline: where forward and loader share the cores (a CPU device),
1 / (1/forward + 1/loader); with a GPU, min(forward, loader_all_cores). The writer is not in the ideal: it is the
work a pipeline must hide. ``ratio_vs_pipelined_ideal`` = precompute / 1 / (1/forward + 1/loader) (median over
rounds of each round's ratio), and on a GPU ``ratio_vs_gpu_bound`` = precompute / min(forward, loader_all_cores).

Usage: python -m bench.precompute --manifest /tmp/q/manifest.jsonl --teacher runs/demo/runs/rgb/checkpoint.pt
Prints a Markdown table (paste into BENCHMARKS.md) and writes bench/results/precompute.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, load_average, machine, rgb_subset
from shared.device import autocast_dtype, select_device
from shared.features import VIEWS, encoding
from shared.nets.teachers import LoadedTeacher, load_teacher
from teacher_server.cli import PIPELINE_OPENMP
from teacher_server.precompute import collection_specs, default_loader_workers, frame_loader, precompute, teacher_views
from teacher_server.settings import PrecomputeSettings
from teacher_server.shard_writer import HostMaps, ShardWriter
from teacher_server.store import FeatureStore

_DEFAULTS = {k: PrecomputeSettings.model_fields[k].default
             for k in ("batch_size", "shard_frames", "encoding")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(frames: int, fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return frames / (time.perf_counter() - t)


class PipelineBench:
    """The stages of one precompute configuration on the first ``args.frames`` frames of a manifest."""

    def __init__(self, tmp: Path, args: argparse.Namespace, teacher: LoadedTeacher, device: torch.device) -> None:
        self.tmp, self.args, self.teacher, self.device = tmp, args, teacher, device
        self.manifest, self.dataset = rgb_subset(args.manifest, args.frames, tmp / "manifest.jsonl")
        self.input_size = tuple(args.input_size) if args.input_size else None
        self.enc = encoding(args.encoding)
        specs, paths = collection_specs([self.manifest], None, teacher, self.input_size, args.views)
        self.specs, self.paths = specs, paths[self.dataset]
        self.frames = len(specs[0].ids)
        # A warm-up run: page cache, allocator and kernels as in every round; its collection gives the layout.
        self.precompute_rate(tmp / "warm-up")
        self.col = FeatureStore.open(tmp / "warm-up").collections[self.dataset]
        self.trunk = teacher.trunk  # precompute moved it to the device, channels_last
        self.amp_dtype = autocast_dtype(device, args.amp)
        self.batches = [x.to(device, memory_format=torch.channels_last) for x in self.loader(0)]
        self.maps = [HostMaps(m.float().cpu()) for m in self._forward()]

    def loader(self, workers: int) -> torch.utils.data.DataLoader:
        shards = range(self.col.n_shards)
        return frame_loader(self.col, self.paths, self.teacher, shards, self.args.batch_size, workers, self.device,
                            resize=self.input_size is not None)

    def _forward(self) -> list[torch.Tensor]:
        mirror = "mirror" in self.args.views
        with torch.inference_mode():
            out = [teacher_views(self.trunk, x, mirror, self.amp_dtype) for x in self.batches]
        _sync(self.device)
        return out

    def forward_rate(self) -> float:
        return _rate(self.frames, self._forward)

    def loader_rate(self, workers: int) -> float:
        def drain() -> None:
            for _ in self.loader(workers):
                pass

        return _rate(self.frames, drain)

    def writer_rate(self, path: Path) -> float:
        def write() -> None:
            store = FeatureStore.create_or_open(path, self.teacher.identity, self.enc, self.specs,
                                                self.args.shard_frames)
            writer = ShardWriter(store.collections[self.dataset], self.enc)
            batches = iter(self.maps)
            for k in range(self.col.n_shards):
                rows, shard = len(self.col.shard_rows(k)), []
                while rows > 0:
                    shard.append(next(batches))
                    rows -= len(shard[-1].tensor)
                writer.submit(k, shard)
            writer.close()

        return _rate(self.frames, write)

    def precompute_rate(self, path: Path) -> float:
        a = self.args
        return _rate(self.frames, lambda: precompute(
            path, [self.manifest], self.teacher, self.enc, input_size=self.input_size, shard_frames=a.shard_frames,
            batch_size=a.batch_size, loader_workers=a.loader_workers, device=self.device, amp=a.amp, views=a.views,
            progress=False))


def run_rounds(bench: PipelineBench, rounds: int, all_cores: int | None) -> list[dict[str, float]]:
    """Every stage once per round, in the same order; each round's rates in frames/s.

    Interleaved: this shared VM's speed drifts by up to 2x over minutes, so ratios are taken within a round.
    """
    out = []
    for r in range(rounds):
        row = {"forward": bench.forward_rate(), "loader": bench.loader_rate(bench.args.loader_workers)}
        if all_cores is not None:
            row["loader_all_cores"] = bench.loader_rate(all_cores)
        row["writer"] = bench.writer_rate(bench.tmp / f"writer-{r}")
        row["precompute"] = bench.precompute_rate(bench.tmp / f"precompute-{r}")
        for store in ("writer", "precompute"):
            shutil.rmtree(bench.tmp / f"{store}-{r}")
        row["pipelined_ideal"] = 1.0 / (1.0 / row["forward"] + 1.0 / row["loader"])
        row["ratio_vs_pipelined_ideal"] = row["precompute"] / row["pipelined_ideal"]
        if all_cores is not None:
            row["gpu_bound"] = min(row["forward"], row["loader_all_cores"])
            row["ratio_vs_gpu_bound"] = row["precompute"] / row["gpu_bound"]
        out.append(row)
    return out


def summarise(rows: list[dict[str, float]]) -> dict:
    """Medians over rounds of each rate and ratio, and the range of each ratio."""
    out: dict = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    for k in ("ratio_vs_pipelined_ideal", "ratio_vs_gpu_bound"):
        if k in rows[0]:
            out[f"{k}_range"] = [min(r[k] for r in rows), max(r[k] for r in rows)]
    return out


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="manifest whose RGB frames are encoded")
    p.add_argument("--teacher", default="alexnet",
                   help="checkpoint path (arch=checkpoint), or a torchvision arch ('alexnet', 'vgg16') with random "
                   "weights (default: alexnet)")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=1000, help="first frames of the manifest to encode per run")
    p.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS))
    p.add_argument("--input-size", nargs=2, type=int, default=None, help="H W to resize to (default: native size)")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"])
    p.add_argument("--shard-frames", type=int, default=_DEFAULTS["shard_frames"])
    p.add_argument("--loader-workers", type=int, default=None,
                   help="precompute's DataLoader processes (default: precompute's own for the device)")
    p.add_argument("--encoding", default=_DEFAULTS["encoding"])
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="autocast (default: precompute's: float16 on CUDA, off on the CPU)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over every stage (medians reported)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "precompute.json")
    return p.parse_args()


def print_table(res: dict) -> None:
    print(f"Machine: {res['machine']} ({res['device']}); load average {res['load_average_start']} -> "
          f"{res['load_average_end']}; teacher {res['teacher']}, {res['frames']} frames {res['input_size']}, views "
          f"{'+'.join(res['views'])}, batch {res['batch_size']}, {res['loader_workers']} loader workers\n")
    med = res["median"]
    names = {"forward": "teacher forward alone (batches in device memory)",
             "loader": f"image loader alone ({res['loader_workers']} workers)",
             "loader_all_cores": f"image loader alone ({res['all_cores']} workers: all cores)",
             "writer": "shard writer alone (stats, dtype, zstd, durable writes)",
             "pipelined_ideal": "ideal: 1 / (1/forward + 1/loader)",
             "gpu_bound": "ideal on a GPU: min(forward, loader all cores)",
             "precompute": "**precompute**"}
    print("| stage | frames/s (median) | range over rounds |\n|---|---|---|")
    for key, label in names.items():
        if key in med:
            vals = [r[key] for r in res["rounds"]]
            print(f"| {label} | {med[key]:.0f} | {min(vals):.0f}–{max(vals):.0f} |")
    lo, hi = med["ratio_vs_pipelined_ideal_range"]
    print(f"\nratio_vs_pipelined_ideal: **{med['ratio_vs_pipelined_ideal']:.2f}** ({lo:.2f}–{hi:.2f})")
    if "ratio_vs_gpu_bound" in med:
        lo, hi = med["ratio_vs_gpu_bound_range"]
        print(f"ratio_vs_gpu_bound: **{med['ratio_vs_gpu_bound']:.2f}** ({lo:.2f}–{hi:.2f})")


def main() -> None:
    args = _parse_args()
    if any(os.environ.get(k) is None for k in PIPELINE_OPENMP):  # measure precompute as `teacher-server` runs it
        os.environ.update({k: os.environ.get(k, v) for k, v in PIPELINE_OPENMP.items()})
        os.execv(sys.executable, [sys.executable, "-m", "bench.precompute", *sys.argv[1:]])
    device = select_device(args.device)
    teacher = (load_teacher("checkpoint", args.teacher) if Path(args.teacher).is_file()
               else load_teacher(args.teacher, "random"))
    if args.loader_workers is None:
        args.loader_workers = default_loader_workers(device)
    all_cores = len(os.sched_getaffinity(0)) if device.type == "cuda" else None
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-precompute-") as tmp:
        bench = PipelineBench(Path(tmp), args, teacher, device)
        rows = run_rounds(bench, args.rounds, all_cores)
        shape, input_size = list(bench.col.shape), list(bench.col.input_size)
    res = {
        "machine": machine(), "device": str(device), "load_average_start": load_start,
        "load_average_end": load_average(), "teacher": teacher.identity.short_id(), "frames": bench.frames,
        "map_shape": shape, "input_size": input_size, "views": args.views, "batch_size": args.batch_size,
        "shard_frames": args.shard_frames, "loader_workers": args.loader_workers, "all_cores": all_cores,
        "amp": str(autocast_dtype(device, args.amp)), "openmp": {k: os.environ.get(k) for k in PIPELINE_OPENMP},
        "rounds": rows, "median": summarise(rows),
    }
    res["ratio_vs_pipelined_ideal"] = res["median"]["ratio_vs_pipelined_ideal"]
    if all_cores is not None:
        res["ratio_vs_gpu_bound"] = res["median"]["ratio_vs_gpu_bound"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(res)


if __name__ == "__main__":
    main()
