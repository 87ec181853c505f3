"""Why does the control start below no init? The conv5 features each init hands the detector, measured.

The control regresses an untrained (random-weight) teacher's pool5. For every init of a finished comparison (no
init, copy from RGB, supervision transfer, the control) this builds the detector's trunk exactly as ``detect`` does
before its first step (``build_detect``: same seed, same copied or transferred weights), and the fine-tuned
detectors' trunks from their checkpoints, runs them over test frames and reports, of the conv5 map RoI pooling
reads:

- ``eff. rank``: the effective rank exp(H(p)) of the channel covariance over all frames and positions, p = its
  eigenvalues normalised to sum 1 (C5 for channels that vary independently, 1 for a single direction);
- ``dead``: the fraction of channels that are 0 at every position of every frame (ReLU outputs);
- ``top-5 share``: the variance share of the 5 largest eigenvalues;
- ``rms``: the root mean square activation (the scale of what fc6 receives, which sets its gradients);
- ``moved``: how far fine-tuning took the trunk's conv weights, ||W_trained - W_init|| / ||W_init|| over all of
  them (a trunk that barely moves kept its init, for better or worse).

Usage: python -m bench.trunk_rank --compare runs/demo-paper/runs/compare-hha --frames 100
Prints a Markdown table and writes bench/results/trunk_rank-<compare folder>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from bench.common import machine, write_results
from student_trainer.checkpoint import load_checkpoint
from student_trainer.detect import DetectRun, build_detect, run_settings
from student_trainer.detect_data import EvalFrames, pad_images

ROWS = ("no-init", "copy-rgb", "transfer", "control")


def spectrum_stats(features: np.ndarray) -> dict[str, float]:
    """Effective rank, dead-channel fraction, top-5 variance share and RMS of (N, C) feature samples (float64)."""
    x = features.astype(np.float64)
    dead = float((np.abs(x).max(axis=0) == 0).mean())
    eig = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)[::-1]
    p = eig / eig.sum()
    nz = p[p > 0]
    return {"effective_rank": float(np.exp(-(nz * np.log(nz)).sum())), "dead": dead,
            "top5_share": float(p[:5].sum()), "rms": float(np.sqrt((x ** 2).mean()))}


def trunks(run_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module, DetectRun]:
    """A run's detector trunk as ``detect`` builds it before its first step, the same trunk with the run's trained
    weights, and the run (for its test frames)."""
    run = build_detect(run_settings(run_dir, progress=False, device="cpu"))
    init = copy.deepcopy(run.model.trunk).eval()
    run.model.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["model"])
    return init, run.model.trunk.eval(), run


def conv5_samples(trunk: torch.nn.Module, run: DetectRun, frames: int) -> np.ndarray:
    """(frames x positions, C5) conv5 activations of ``trunk`` on the run's first test frames."""
    data = EvalFrames(run.test_frames[:frames], run.modality)
    out = []
    with torch.inference_mode():
        for i in range(0, len(data), 16):
            batch = [data[k].image for k in range(i, min(i + 16, len(data)))]
            fmap = trunk.conv5_features(pad_images(batch))
            out.append(fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1]).numpy())
    return np.concatenate(out)


def moved(init: torch.nn.Module, trained: torch.nn.Module) -> float:
    """||W_trained - W_init|| / ||W_init|| over every conv weight of the trunk."""
    a = {k: v for k, v in init.state_dict().items() if k.endswith("weight") and v.ndim == 4}
    b = trained.state_dict()
    num = sum(float((b[k].double() - v.double()).pow(2).sum()) for k, v in a.items())
    return (num / sum(float(v.double().pow(2).sum()) for v in a.values())) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--frames", type=int, default=100, help="test frames per trunk")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="detector seeds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    report = json.loads((args.compare / "compare.json").read_text())
    table = {}
    for row in ROWS:
        if not (args.compare / f"{row}-seed{args.seeds[0]}").is_dir():
            continue
        stats: dict[str, list[dict[str, float]]] = {"init": [], "trained": []}
        for seed in args.seeds:
            init, trained, run = trunks(args.compare / f"{row}-seed{seed}")
            stats["init"].append(spectrum_stats(conv5_samples(init, run, args.frames)))
            stats["trained"].append({**spectrum_stats(conv5_samples(trained, run, args.frames)),
                                     "moved": moved(init, trained)})
        table[row] = {when: {k: float(np.mean([v[k] for v in vals])) for k in vals[0]} for when, vals in stats.items()}
        table[row]["mAP"] = report["rows"][row]["mAP"]["mean"]
    results = {"compare": str(args.compare), "machine": machine(), "frames": args.frames, "seeds": args.seeds,
               "rows": table}
    write_results(f"trunk_rank-{args.compare.name}", results)
    print(f"| {args.compare.name}: conv5 | eff. rank at init | dead at init | top-5 share at init | RMS at init | "
          "eff. rank fine-tuned | dead fine-tuned | RMS fine-tuned | moved | fine-tuned mAP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row, t in table.items():
        i, f = t["init"], t["trained"]
        print(f"| {row} | {i['effective_rank']:.1f} | {100 * i['dead']:.0f} % | {100 * i['top5_share']:.0f} % | "
              f"{i['rms']:.3g} | {f['effective_rank']:.1f} | {100 * f['dead']:.0f} % | {f['rms']:.3g} | "
              f"{f['moved']:.3f} | {100 * t['mAP']:.1f} |")


if __name__ == "__main__":
    main()
