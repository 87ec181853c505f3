"""Which of the control's layers make it a worse init than a random trunk? Hybrid trunks, fine-tuned.

The control (supervision transfer from an untrained teacher) fine-tunes below no init on HHA. This builds, per
detector seed, trunks whose first k conv blocks (conv + BatchNorm, with its statistics) come from the control student
and the rest from the random trunk the no-init detector of that seed starts from, and fine-tunes each exactly as the
comparison's control run was configured (only the trunk checkpoint differs). k = 0 is the no-init row and k = 5 the
control row, both read from the comparison.

Usage: python -m bench.control_layers --compare runs/demo-paper/runs/compare-hha \\
    --control runs/demo-paper/runs/control-hha/checkpoint.pt --out runs/control-layers/hha
Prints a Markdown table and writes bench/results/control_layers-<out folder>.json.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from bench.common import REPO, machine
from bench.more_seeds import train_detector
from shared.nets.trunks import AlexNetTrunk, TrunkSpec
from student_trainer.checkpoint import load_checkpoint, save_checkpoint
from student_trainer.compare import seed_stats
from student_trainer.detect import run_settings

BLOCKS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def hybrid_checkpoint(control: Path, k: int, seed: int, out: Path) -> Path:
    """A trunk checkpoint: the control's first ``k`` conv blocks, the rest of a random trunk seeded as ``detect``
    seeds a no-init detector's."""
    ckpt = load_checkpoint(control)
    spec = TrunkSpec.model_validate(ckpt["trunk"]["spec"])
    torch.manual_seed(seed)
    state = {f"trunk.{name}": v for name, v in AlexNetTrunk(spec).state_dict().items()}
    for name, v in ckpt["model"].items():
        if name.startswith("trunk.") and name.split(".")[1] in BLOCKS[:k]:
            state[name] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model": state, "trunk": ckpt["trunk"], "modality": ckpt["modality"], "step": 0,
                          "hybrid": {"control": str(control), "control_blocks": list(BLOCKS[:k]), "seed": seed}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--control", type=Path, required=True, help="the control student's checkpoint")
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 3, 4], help="conv blocks k from the control")
    ap.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and runs")
    ap.add_argument("--workers", type=int, default=2, help="detectors trained at once")
    args = ap.parse_args()
    report = json.loads((args.compare / "compare.json").read_text())
    seeds = report["seeds"]
    table = {0: [r["mAP"] for r in report["rows"]["no-init"]["runs"]],
             len(BLOCKS): [r["mAP"] for r in report["rows"]["control"]["runs"]]}
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = {}
        for k in args.blocks:
            for seed in seeds:
                ckpt = hybrid_checkpoint(args.control, k, seed, args.out / f"hybrid-k{k}-seed{seed}.pt")
                jobs[k, seed] = pool.submit(train_detector, run_settings(
                    args.compare / f"control-seed{seed}", trunk_checkpoint=ckpt, out=args.out / f"k{k}-seed{seed}",
                    progress=False))
        table |= {k: [jobs[k, s].result() for s in seeds] for k in args.blocks}
    rows = {k: seed_stats(v) for k, v in sorted(table.items())}
    results = {"compare": str(args.compare), "control": str(args.control), "machine": machine(), "seeds": seeds,
               "rows": {str(k): {"mAP": m, "runs": table[k]} for k, m in rows.items()}}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / f"control_layers-{args.out.name}.json").write_text(json.dumps(results, indent=1))
    print(f"| {args.compare.name}: conv blocks from the control | fine-tuned mAP % ({len(seeds)} seeds) |\n|---|---|")
    for k, m in rows.items():
        what = "none (no init)" if k == 0 else "all (the control)" if k == len(BLOCKS) else ", ".join(BLOCKS[:k])
        print(f"| {what} | {100 * m['mean']:.1f} ± {100 * m['std']:.1f} |")


if __name__ == "__main__":
    main()
