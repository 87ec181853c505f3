"""Why does supervision transfer leave ~0.73 of the teacher's variance unexplained? A held-out study.

Trains the student exactly as ``student-trainer transfer`` does (same trunk, adapter, target scale, optimiser and
schedule; targets from the store in memory instead of over HTTP, which changes nothing but speed) from two inputs
of the same frames, and evaluates the held-out residual variance ``||pred - t||^2 / ||t - mean(t)||^2`` along the
way (model in eval mode, no flips, frames of the test split that no student trained on):

- ``hha``: the real student (depth encoded as HHA);
- ``rgb``: the same student fed the RGB frames the teacher saw: what this architecture and schedule can reach
  when the input holds everything the targets were computed from (the gap to ``hha`` is what depth cannot
  predict of the RGB teacher);
- ``mean``: predicting the training targets' per-element mean for every frame (no input at all).

Usage: python -m bench.residual --manifest runs/demo/data/synth/manifest.jsonl --store runs/demo/store
Prints a Markdown table and writes bench/results/residual.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from bench.common import REPO, MemoryTargets, machine
from shared.manifest import read_manifest
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.optim import make_optimizer
from student_trainer.student import TransferModel, student_spec_for
from student_trainer.transfer import train_step
from student_trainer.transfer_data import BatchSchedule, TransferBatches
from student_trainer.transfer_settings import TransferSettings
from teacher_server.store import FeatureStore


def residual(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of the targets' variance (around their global mean, as the trainer logs it) left unexplained."""
    return float(((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def predict(model: TransferModel, data: TransferBatches, scale: float) -> np.ndarray:
    """Unscaled predictions for every frame of ``data`` (eval mode, no flips)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(data.ids), 64):
            x = torch.stack([data.load_input(k, False) for k in range(i, min(i + 64, len(data.ids)))])
            out.append(model(x.contiguous(memory_format=torch.channels_last)).numpy() / scale)
    model.train()
    return np.concatenate(out)


def study(modality: str, args: argparse.Namespace, mem: MemoryTargets, scale: float, shape, input_hw) -> list[dict]:
    m = read_manifest(args.manifest)
    field = modality(modality).manifest_field
    train = [f for f in m.split(args.train_split) if f.hha]
    test = [f for f in m.split(args.test_split) if f.hha]
    s = TransferSettings(modality="hha", manifest=args.manifest, out=Path("unused"), profile="quick",
                         iterations=args.steps, seed=args.seed)
    spec = student_spec_for(trunk_spec(s.trunk, width=s.width), input_hw, shape[1:])
    torch.manual_seed(s.seed)
    model = TransferModel(AlexNetTrunk(spec), shape[0]).to(memory_format=torch.channels_last).train()
    opt, sched = make_optimizer(model, s)
    scaler = torch.amp.GradScaler(enabled=False)
    mod = modality(modality)
    data = TransferBatches([f.id for f in train], [m.path(getattr(f, field)) for f in train], mod,
                           BatchSchedule(len(train), s.batch_size, s.seed, s.flip), args.steps, 0, input_hw,
                           lambda: mem)
    held = TransferBatches([f.id for f in test], [m.path(getattr(f, field)) for f in test], mod,
                           BatchSchedule(len(test), 1, 0, False), 0, 0, input_hw, lambda: mem)
    truth = mem.get_many(held.ids)
    rows, t0 = [], time.perf_counter()
    for step, (x, target, _) in enumerate(tqdm(DataLoader(data, batch_size=None, num_workers=2), total=args.steps,
                                               desc=f"student from {modality}"), start=1):
        pred, target, _ = train_step(model, opt, scaler, x, target * scale, torch.device("cpu"))
        sched.step()
        if step in args.eval_at:
            p = predict(model, held, scale)
            cos = np.mean([np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
                           for a, b in zip(p, truth, strict=True)])
            train_res = residual(pred.detach().float().numpy(), target.numpy())
            rows.append({"input": modality, "step": step, "heldout_residual": residual(p, truth),
                         "heldout_cosine": float(cos), "train_batch_residual": train_res,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--store", type=Path, required=True, help="the trained teacher's store (covers both splits)")
    p.add_argument("--train-split", default="depth_transfer")
    p.add_argument("--test-split", default="depth_test")
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--eval-at", type=int, nargs="+", default=[100, 400, 800, 1600])
    p.add_argument("--inputs", nargs="+", default=["hha", "rgb"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "residual.json")
    args = p.parse_args()
    store = FeatureStore.open(args.store)
    dataset = read_manifest(args.manifest).header.dataset
    col = store.collections[dataset]
    mem = MemoryTargets(args.store, dataset)
    shape = col.shape
    scale = 1.0 / (col.summary()["rms_l2_norm"] / math.sqrt(math.prod(shape)))  # as the trainer derives it
    input_hw = col.input_size
    m = read_manifest(args.manifest)
    train_ids = [f.id for f in m.split(args.train_split) if f.hha]
    test_ids = [f.id for f in m.split(args.test_split) if f.hha]
    mean_map = mem.get_many(train_ids).mean(axis=0)
    truth = mem.get_many(test_ids)
    rows = [{"input": "mean", "step": 0, "heldout_residual": residual(np.broadcast_to(mean_map, truth.shape), truth)}]
    for modality in args.inputs:
        rows += study(modality, args, mem, scale, shape, input_hw)
    out = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("\n| student input | step | held-out residual | held-out cosine | training-batch residual |")
    print("|---|---|---|---|---|")
    for r in rows:
        nan = float("nan")
        print(f"| {r['input']} | {r['step']} | {r['heldout_residual']:.3f} | {r.get('heldout_cosine', nan):.3f} | "
              f"{r.get('train_batch_residual', nan):.3f} |")


if __name__ == "__main__":
    main()
