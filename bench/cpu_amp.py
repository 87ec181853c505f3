"""Benchmark bfloat16 autocast (``--amp`` on CPU) against float32 for the CPU profiles' training steps.

Why: the students and detectors of the CPU demo are the cost of its budget; on a CPU with AVX-512 BF16 oneDNN may
run bfloat16 convolutions faster. Both precisions run interleaved in one process on the same weights and batches
(channels_last, as the trainers), so the ratio holds on a loaded machine; the loss and gradients are compared to
show what bfloat16 changes besides speed. Whether bfloat16 trains as well is a separate, measured question (a
student's held-out residual: BENCHMARKS.md, "The benchmark's shape").

Usage: python -m bench.cpu_amp [--threads 1] [--reps 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import REPO, machine
from bench.cpu_layout import _cases
from shared.device import autocast


def _step(name: str, model: torch.nn.Module, args: tuple, dtype: torch.dtype | None) -> torch.Tensor:
    with autocast(torch.device("cpu"), dtype):
        if name.startswith("student"):
            x, target = args
            loss = F.mse_loss(model(x).float(), target)
        else:
            images, rois = args
            logits, deltas = model(images, rois)
            loss = logits.float().square().mean() + deltas.float().square().mean()
    loss.backward()
    return loss.detach()


def bench(reps: int, batch: int) -> list[dict]:
    rows = []
    for name, (model, _, args) in _cases(0).items():
        if name.startswith("student"):
            x, target = args
            args = (x[:batch], target[:batch])
            name = f"student step (batch {batch})"
        f32 = model.to(memory_format=torch.channels_last)
        bf16 = copy.deepcopy(f32)
        args = (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        losses = {}
        for rep in range(reps + 1):  # the first rep warms both up and is not counted
            for key, m, dtype in (("float32", f32, None), ("bfloat16", bf16, torch.bfloat16)):
                m.zero_grad(set_to_none=True)
                t = time.perf_counter()
                losses[key] = _step(name, m, args, dtype)
                if rep:
                    times[key].append(time.perf_counter() - t)
        g32 = [p.grad for p in f32.parameters() if p.grad is not None]
        g16 = [p.grad for p in bf16.parameters() if p.grad is not None]
        diff = max(float((a - b).norm() / a.norm().clamp_min(1e-12)) for a, b in zip(g32, g16, strict=True))
        ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
        rows.append({"case": name, "float32_ms": ms["float32"], "bfloat16_ms": ms["bfloat16"],
                     "speedup": ms["float32"] / ms["bfloat16"],
                     "loss_rel_diff": float((losses["float32"] - losses["bfloat16"]).abs() / losses["float32"]),
                     "max_rel_grad_diff": diff})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the demo's parallel children: 1)")
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions of each step")
    ap.add_argument("--batch", type=int, default=16, help="student batch (the quick profile: 16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(args.reps, args.batch)
    out = REPO / "bench" / "results" / "cpu_amp.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2))
    print("| step | threads | float32 ms | bfloat16 ms | speed-up | loss rel. diff | max rel. grad diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {args.threads} | {r['float32_ms']:.1f} | {r['bfloat16_ms']:.1f} | "
              f"{r['speedup']:.2f}x | {r['loss_rel_diff']:.1e} | {r['max_rel_grad_diff']:.1e} |")


if __name__ == "__main__":
    main()
