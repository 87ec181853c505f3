"""Benchmark student training throughput: targets over HTTP vs in memory vs the teacher run online.

(a) http:    the trainer's own data path — DataLoader workers fetch each step's targets in one batch request;
(b) memory:  the same loader with targets already in RAM (the ceiling for (a));
(c) online:  what a user would do without the cache — the frozen teacher runs on the RGB frames every step.
Targets: (a) >= 0.95 x (b); (a)/(c) >= 0.9 x the ideal speed-up (teacher forward + step) / step.

Usage: python -m bench.train --manifest runs/demo/data/synth/manifest.jsonl [--steps 30] [--teachers alexnet vgg16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bench.common import REPO, MemoryTargets, machine, served
from shared.client import TeacherClient
from shared.device import select_device
from shared.features import encoding
from shared.manifest import FrameRecord, Manifest, read_manifest, write_manifest
from shared.modalities import modality
from shared.nets.teachers import load_teacher
from shared.nets.trunks import AlexNetTrunk, TrunkSpec, trunk_spec
from student_trainer.student import TransferModel, student_spec_for
from student_trainer.transfer import train_step
from student_trainer.transfer_data import BatchSchedule, TransferBatches
from teacher_server.precompute import precompute
from teacher_server.store import FeatureStore


class RgbBatches(TransferBatches):
    """Same schedule and student inputs, plus the RGB frames for an online teacher (no targets)."""

    def __init__(self, *a, rgb_paths, **kw) -> None:
        super().__init__(*a, **kw)
        self.rgb = TransferBatches(self.ids, rgb_paths, modality("rgb"), self.schedule, self.steps, self.first_step,
                                   self.hw, self._make_source)

    def __getitem__(self, k):
        step = self.first_step + k
        idx, flips = self.schedule.batch(step)
        x = torch.stack([self.load_input(int(i), bool(f)) for i, f in zip(idx, flips, strict=True)])
        rgb = torch.stack([self.rgb.load_input(int(i), bool(f)) for i, f in zip(idx, flips, strict=True)])
        return x, rgb, step


def timed_loop(loader, step_fn, steps: int, warmup: int) -> dict:
    it = iter(loader)
    waits, totals = [], []
    t_prev = time.perf_counter()
    for k in range(steps):
        batch = next(it)
        t_ready = time.perf_counter()
        step_fn(batch)
        now = time.perf_counter()
        if k >= warmup:
            waits.append(t_ready - t_prev)
            totals.append(now - t_prev)
        t_prev = now
    return {"steps_per_s": len(totals) / sum(totals), "wait_fraction": sum(waits) / sum(totals)}


def bench_teacher(arch: str, frames: list[FrameRecord], m: Manifest, args: argparse.Namespace,
                  device: torch.device) -> dict:
    """(a), (b) and (c) for one random teacher ``arch`` on ``frames``: medians, ratios and every repeat."""
    teacher = load_teacher(arch, "random")
    hw = tuple(args.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "m.jsonl"
        write_manifest(sub, m.header, [f.model_copy(update={"rgb": str(m.path(f.rgb))}) for f in frames])
        store = Path(tmp) / "store"
        precompute(store, [sub], teacher, encoding("f32-zstd1"), input_size=hw, progress=False, device=device)
        col = FeatureStore.open(store).collections[m.header.dataset]
        spec = student_spec_for(trunk_spec("alexnet", width=args.width, batch_norm=True), hw, col.shape[1:])
        results = {"teacher": arch, "map_shape": list(col.shape), "student_conv1_padding": spec.conv1_padding}
        runs, t_fwd = interleaved_runs(store, col.shape, spec, teacher.trunk.to(device), frames, m, args, device)
    results.update(summarise(runs, t_fwd))
    return results


def interleaved_runs(store: Path, map_shape: tuple[int, int, int], spec: TrunkSpec, trunk: torch.nn.Module,
                     frames: list[FrameRecord], m: Manifest, args: argparse.Namespace,
                     device: torch.device) -> tuple[dict[str, list[dict]], list[float]]:
    """``args.repeats`` rounds of (b), (a), (c), each from a fresh student, with ``store`` served over HTTP.

    Returns each mode's :func:`timed_loop` results per repeat, and the online teacher's forward times (s).
    """
    hw = tuple(args.input_size)
    ids = [f.id for f in frames]
    hha = [m.path(f.hha) for f in frames]
    schedule = BatchSchedule(len(ids), args.batch_size, 0)
    n = args.steps + args.warmup

    def fresh():
        torch.manual_seed(0)
        model = TransferModel(AlexNetTrunk(spec), map_shape[0]).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        return model, opt, torch.amp.GradScaler(enabled=device.type == "cuda")

    def loader(ds):
        return DataLoader(ds, batch_size=None, num_workers=args.workers, prefetch_factor=4)

    mem = MemoryTargets(store, m.header.dataset)
    t_fwd: list[float] = []

    def online(b):
        t = time.perf_counter()
        with torch.inference_mode():
            target = trunk(b[1].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_fwd.append(time.perf_counter() - t)
        train_step(model, opt, scaler, b[0], target.clone(), device)

    def cached(b):
        train_step(model, opt, scaler, b[0], b[1], device)

    runs: dict[str, list[dict]] = {"memory": [], "http": [], "online": []}
    with served(store) as url:
        # Interleaved repeats: this VM's speed drifts over minutes; (a)/(b) is taken within each repeat.
        for _ in range(args.repeats):
            model, opt, scaler = fresh()
            ds = TransferBatches(ids, hha, modality("hha"), schedule, n, 0, hw, lambda: mem)
            runs["memory"].append(timed_loop(loader(ds), cached, n, args.warmup))
            model, opt, scaler = fresh()
            ds = TransferBatches(ids, hha, modality("hha"), schedule, n, 0, hw, lambda: TeacherClient(url))
            runs["http"].append(timed_loop(loader(ds), cached, n, args.warmup))
            model, opt, scaler = fresh()
            ds = RgbBatches(ids, hha, modality("hha"), schedule, n, 0, hw, lambda: mem,
                            rgb_paths=[m.path(f.rgb) for f in frames])
            runs["online"].append(timed_loop(loader(ds), online, n, args.warmup))
    return runs, t_fwd


def summarise(runs: dict[str, list[dict]], t_fwd: list[float]) -> dict:
    """Medians per mode, (a)/(b) per repeat and its median, (a)/(c), and the ideal speed-up (fwd + step) / step."""
    results: dict = {mode: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for mode, rs in runs.items()}
    paired = [h["steps_per_s"] / b["steps_per_s"] for h, b in zip(runs["http"], runs["memory"], strict=True)]
    results["http_vs_memory_per_repeat"] = paired
    results["runs"] = runs
    fwd = float(np.median(t_fwd))  # median over every repeat: robust to the warm-up steps
    step_s = 1.0 / results["memory"]["steps_per_s"]
    results["teacher_forward_s"] = fwd
    results["ideal_speedup"] = (fwd + step_s) / step_s
    results["http_vs_memory"] = float(np.median(paired))
    results["http_vs_online"] = results["http"]["steps_per_s"] / results["online"]["steps_per_s"]
    results["speedup_fraction_of_ideal"] = results["http_vs_online"] / results["ideal_speedup"]
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True, help="manifest with HHA images (xmodal-data synth)")
    p.add_argument("--split", default="depth_transfer")
    p.add_argument("--teachers", nargs="+", default=["alexnet", "vgg16"])
    p.add_argument("--input-size", nargs=2, type=int, default=[160, 224])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of (b), (a), (c); medians reported")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--width", type=float, default=1.0, help="student width multiplier")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = p.parse_args()
    device = select_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    m = read_manifest(args.manifest)
    frames = [f for f in m.split(args.split) if f.hha][: (args.steps + args.warmup) * args.batch_size]
    if not frames:
        raise SystemExit(f"{args.manifest}: no {args.split} frames with HHA images (run xmodal-data encode)")
    rows = [bench_teacher(a, frames, m, args, device) for a in args.teachers]
    out = {"machine": machine(), "device": str(device), "args": {k: str(v) for k, v in vars(args).items()},
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"Machine: {out['machine']} ({device}); batch {args.batch_size}, input {args.input_size}, "
          f"student alexnet x{args.width}\n")
    print("| teacher (pool5) | (a) HTTP steps/s | wait | (b) memory steps/s | (c) online steps/s | (a)/(b) (range) | "
          "(a)/(c) | ideal (fwd+step)/step | (a)/(c) ÷ ideal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['teacher']} {tuple(r['map_shape'])} | {r['http']['steps_per_s']:.2f} | "
              f"{r['http']['wait_fraction']:.1%} | {r['memory']['steps_per_s']:.2f} | "
              f"{r['online']['steps_per_s']:.2f} | {r['http_vs_memory']:.2f} ({min(r['http_vs_memory_per_repeat']):.2f}"
              f"–{max(r['http_vs_memory_per_repeat']):.2f}) | {r['http_vs_online']:.2f} | "
              f"{r['ideal_speedup']:.2f} | {r['speedup_fraction_of_ideal']:.2f} |")


if __name__ == "__main__":
    main()
