"""Why does RGB + flow fall below RGB alone? Late fusion of a finished comparison at several RGB weights.

The comparison fuses the RGB detector with the transferred one at 0.5 / 0.5 (the paper's average of logits and box
deltas). When the second detector is much weaker than RGB — DIS flow on 96x128 clips is 50 mAP below it — that
average can pull RGB down. This re-fuses the saved RoI outputs of RGB alone and the transfer rows (fine-tuned and
frozen, every seed) at each weight of RGB: a diagnosis read on the test split, not a way to pick the weight (the
comparison picks it on the validation split, depth_val / flow_val: its ``fusion-val`` row).

Usage: python -m bench.fusion_weight --compare runs/demo-paper/runs/compare-flow --weights 0.5 0.6 0.7 0.8 0.9
Prints a Markdown table and writes bench/results/fusion_weight-<compare folder>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import machine, seed_cell, write_results
from student_trainer.compare import seed_stats
from student_trainer.detect import run_settings
from student_trainer.detect_eval import fused_map_by_weight

ROWS = ("transfer", "transfer-frozen")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9],
                    help="weights of the RGB detector (0.5: the paper's fusion)")
    args = ap.parse_args()
    report = json.loads((args.compare / "compare.json").read_text())
    manifest = run_settings(args.compare / "transfer-seed0").manifest
    rgb = report["rows"]["rgb"]["mAP"]["mean"]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for row in ROWS:
        per_seed = [fused_map_by_weight(args.compare / "rgb", args.compare / f"{row}-seed{s}", manifest,
                                        report["test_split"], args.weights) for s in report["seeds"]]
        table[row] = {f"{w:g}": seed_stats([m[w] for m in per_seed]) for w in args.weights}
    results = {"compare": str(args.compare), "machine": machine(), "rgb_alone": rgb, "seeds": report["seeds"],
               "fused": table}
    write_results(f"fusion_weight-{args.compare.name}", results)
    print(f"| {args.compare.name}: RGB + transfer, mAP % (RGB alone {100 * rgb:.1f}) | " + " | ".join(
        f"w_rgb {w:g}" for w in args.weights) + " |")
    print("|---|" + "---|" * len(args.weights))
    for row in ROWS:
        print(f"| {row} | " + " | ".join(seed_cell(c)
                                         for c in table[row].values()) + " |")


if __name__ == "__main__":
    main()
