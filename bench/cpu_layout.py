"""Benchmark the memory layout of training steps on CPU: NCHW (contiguous) vs NHWC (channels_last).

Why: oneDNN's CPU convolutions are much faster on NHWC tensors for the small AlexNet-style trunks this repo trains;
this decides whether every process (not only CUDA ones) switches to channels_last. Both layouts run interleaved in
one process on the same weights and batches, so the ratio holds on a loaded machine; the gradients are compared
to show the layout changes nothing but speed.

Usage: python -m bench.cpu_layout [--threads 1] [--reps 8]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.common import REPO, machine
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.detector import FastRCNN
from student_trainer.student import TransferModel


def _student_step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    F.mse_loss(model(x), target).backward()


def _detector_step(model: torch.nn.Module, x: torch.Tensor, rois: list[torch.Tensor]) -> None:
    logits, deltas = model(x, rois)
    (logits.square().mean() + deltas.square().mean()).backward()


def _cases(seed: int) -> dict[str, tuple[torch.nn.Module, Callable[..., None], tuple]]:
    """Student (batch 32, 96x128, the quick demo) and Fast R-CNN (2 images, 128 RoIs each) steps."""
    g = torch.Generator().manual_seed(seed)
    spec = trunk_spec("alexnet-small")
    student = TransferModel(AlexNetTrunk(spec), 64)
    x = torch.randn(32, 3, 96, 128, generator=g)
    target = torch.rand(32, 64, 6, 8, generator=g)
    detector = FastRCNN(AlexNetTrunk(spec), num_classes=6, fc_width=256, dropout=0.0)
    images = torch.randn(2, 3, 96, 128, generator=g)
    xy = torch.rand(2, 128, 2, generator=g) * torch.tensor([96.0, 64.0])
    wh = torch.rand(2, 128, 2, generator=g) * 32 + 8
    rois = [torch.cat([xy[i], xy[i] + wh[i]], dim=1) for i in range(2)]
    return {"student step (batch 32)": (student, _student_step, (x, target)),
            "detector step (2 images)": (detector, _detector_step, (images, rois))}


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def bench(reps: int) -> list[dict]:
    rows = []
    for name, (model, step, args) in _cases(0).items():
        nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
        images, *rest = args
        nhwc_args = (images.contiguous(memory_format=torch.channels_last), *rest)
        times: dict[str, list[float]] = {"nchw": [], "nhwc": []}
        for rep in range(reps + 1):  # first rep warms both up and is not counted
            for key, m, a in (("nchw", model, args), ("nhwc", nhwc, nhwc_args)):
                m.zero_grad(set_to_none=True)
                t = time.perf_counter()
                step(m, *a)
                if rep:
                    times[key].append(time.perf_counter() - t)
        diff = max(float((g1 - g2).abs().max() / g1.abs().max().clamp_min(1e-12))
                   for g1, g2 in zip(_grads(model), _grads(nhwc), strict=True))
        nchw_ms, nhwc_ms = (1000 * statistics.median(times[k]) for k in ("nchw", "nhwc"))
        rows.append({"case": name, "nchw_ms": nchw_ms, "nhwc_ms": nhwc_ms, "speedup": nchw_ms / nhwc_ms,
                     "max_rel_grad_diff": diff})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the demo runs 1 per process)")
    parser.add_argument("--reps", type=int, default=8, help="timed repetitions of each layout (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(args.reps)
    print(f"machine: {machine()}, {args.threads} thread(s)")
    print("| step | NCHW ms | channels_last ms | speed-up | max rel. grad diff |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['nchw_ms']:.1f} | {r['nhwc_ms']:.1f} | {r['speedup']:.2f}x | "
              f"{r['max_rel_grad_diff']:.1e} |")
    out = REPO / "bench" / "results" / "cpu_layout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
