"""Do the fine-tuned rows of a comparison keep their order with a longer detector schedule?

The demo's detectors train 500 steps (the CPU budget's choice, BENCHMARKS.md "Detector schedule"). This reruns
chosen rows of a finished ``student-trainer compare`` folder at each of several step counts, every run exactly as
the comparison's run of that row and seed was configured but for ``iterations`` (the lr step stays at the same
fraction of the run), and tabulates them beside the comparison's own numbers. Runs are resumable (a finished one is
only re-read).

Usage: python -m bench.schedule --compare runs/demo-paper/runs/compare-hha --iterations 1000 2000 \\
    --out runs/schedule/hha
Prints a Markdown table and writes bench/results/schedule-<out folder>.json.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import machine, seed_cell, write_results
from bench.more_seeds import train_detector
from student_trainer.compare import seed_stats
from student_trainer.detect import run_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--rows", nargs="+", default=["no-init", "copy-rgb", "transfer", "control"],
                    help="row keys of the comparison")
    ap.add_argument("--iterations", type=int, nargs="+", required=True, help="detector step counts to run")
    ap.add_argument("--out", type=Path, required=True, help="folder for the new runs")
    ap.add_argument("--workers", type=int, default=2, help="detectors trained at once")
    args = ap.parse_args()
    report = json.loads((args.compare / "compare.json").read_text())
    seeds = report["seeds"]
    base = run_settings(args.compare / f"{args.rows[0]}-seed{seeds[0]}").iterations
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = {(row, n, seed): pool.submit(train_detector, run_settings(
                    args.compare / f"{row}-seed{seed}", iterations=n, out=args.out / f"{row}-it{n}-seed{seed}",
                    progress=False))
                for n in args.iterations for row in args.rows for seed in seeds}
        runs = {row: {base: [r["mAP"] for r in report["rows"][row]["runs"]]}
                | {n: [jobs[row, n, s].result() for s in seeds] for n in args.iterations} for row in args.rows}
    steps = sorted({base, *args.iterations})
    results = {"compare": str(args.compare), "machine": machine(), "seeds": seeds, "comparison_iterations": base,
               "rows": {row: {str(n): {"mAP": seed_stats(runs[row][n]), "runs": runs[row][n]} for n in steps}
                        for row in args.rows}}
    write_results(f"schedule-{args.out.name}", results)
    print(f"| {args.compare.name}, mAP % ({len(seeds)} seeds) | " + " | ".join(f"{n} steps" for n in steps) + " |\n"
          + "|---" * (len(steps) + 1) + "|")
    for row in args.rows:
        print(f"| {row} | " + " | ".join(seed_cell(seed_stats(runs[row][n])) for n in steps) + " |")


if __name__ == "__main__":
    main()
