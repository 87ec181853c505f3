"""Is a gap between two rows of a comparison real? The same detectors at more seeds, and Welch's t-test.

Reruns chosen rows of a finished ``student-trainer compare`` folder (e.g. ``no-init`` and ``control``) with further
detector seeds, each run exactly as the comparison's seed-0 run was configured but for the seed (and its folder),
then pools them with the comparison's own seeds. Runs are resumable (a finished one is only re-read).

Usage: python -m bench.more_seeds --compare runs/demo-paper/runs/compare-hha --rows no-init control \\
    --seeds 3 4 5 6 7 8 --out runs/seeds/hha
Prints a Markdown table and writes bench/results/more_seeds-<out folder>.json.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scipy import stats

from bench.common import machine, seed_cell, write_results
from student_trainer.compare import seed_stats
from student_trainer.detect import detect_once, run_settings
from student_trainer.detect_settings import DetectSettings


def train_detector(s: DetectSettings) -> float:
    """mAP of the detector ``s`` describes (trained, or re-read when finished). Meant for a process pool: one
    intra-op thread, the CPU split between runs."""
    import torch

    torch.set_num_threads(1)
    return detect_once(s)["mAP"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--rows", nargs=2, required=True, help="two row keys of the comparison, e.g. no-init control")
    ap.add_argument("--seeds", type=int, nargs="+", required=True, help="further detector seeds")
    ap.add_argument("--out", type=Path, required=True, help="folder for the new runs")
    ap.add_argument("--workers", type=int, default=2, help="detectors trained at once")
    args = ap.parse_args()
    report = json.loads((args.compare / "compare.json").read_text())
    base_seed = report["seeds"][0]
    jobs = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for row in args.rows:
            for seed in args.seeds:
                s = run_settings(args.compare / f"{row}-seed{base_seed}", seed=seed, out=args.out / f"{row}-seed{seed}",
                                 progress=False)
                jobs[row, seed] = pool.submit(train_detector, s)
        maps = {row: [r["mAP"] for r in report["rows"][row]["runs"]] + [jobs[row, s].result() for s in args.seeds]
                for row in args.rows}
    (a, b) = (maps[r] for r in args.rows)
    test = stats.ttest_ind(a, b, equal_var=False)
    results = {"compare": str(args.compare), "machine": machine(), "seeds": report["seeds"] + args.seeds,
               "rows": {r: {"mAP": seed_stats(v), "runs": v} for r, v in maps.items()},
               "welch_t": float(test.statistic), "p_value": float(test.pvalue)}
    write_results(f"more_seeds-{args.out.name}", results)
    print(f"| {args.compare.name}, {len(a)} seeds | mAP % (mean ± sd) |\n|---|---|")
    for row, v in maps.items():
        print(f"| {row} | {seed_cell(seed_stats(v))} |")
    print(f"| difference | {100 * (seed_stats(a)['mean'] - seed_stats(b)['mean']):+.1f} (Welch t {test.statistic:.2f}, "
          f"p {test.pvalue:.3f}) |")


if __name__ == "__main__":
    main()
