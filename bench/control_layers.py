"""Which of the control's layers make it a worse init than a random trunk? Hybrid trunks, fine-tuned.

The control (supervision transfer from an untrained teacher) fine-tunes below no init on HHA. This builds, per
detector seed, trunks that take some layers from the control student and the rest from the random trunk the no-init
detector of that seed starts from, and fine-tunes each exactly as the comparison's control run was configured (only
the trunk checkpoint differs, and the schedule where ``--iterations`` says so). A ``--take`` spec names the layers:
``none``, ``all``, or comma-separated ``convN`` (a whole block: conv and BatchNorm with its statistics),
``convA-B`` (blocks A to B), ``convN.conv`` (the conv weights only) or ``convN.bn`` (the BatchNorm only). At the
comparison's schedule its own no-init and control rows join the table (``none`` and ``all``).

Usage: python -m bench.control_layers --compare runs/demo-paper/runs/compare-hha \\
    --control runs/demo-paper/runs/control-hha/checkpoint.pt --take conv1 conv1-2 conv1-3 conv1-4 conv5 \\
    --out runs/control-layers/hha
Prints a Markdown table and writes bench/results/control_layers-<out folder>.json.
"""

from __future__ import annotations

import argparse
import json
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from bench.common import machine, seed_cell, write_results
from bench.more_seeds import train_detector
from shared.nets.trunks import AlexNetTrunk, TrunkSpec
from student_trainer.checkpoint import load_checkpoint, save_checkpoint
from student_trainer.compare import seed_stats
from student_trainer.detect import run_settings

BLOCKS = ("conv1", "conv2", "conv3", "conv4", "conv5")
_PART = re.compile(r"conv([1-5])(?:-([1-5]))?(?:\.(conv|bn))?")


def take_prefixes(spec: str) -> tuple[str, ...]:
    """The trunk state-dict prefixes (``conv5.`` a block, ``conv5.0.`` its conv, ``conv5.1.`` its BatchNorm) that a
    ``--take`` spec copies from the control."""
    if spec in ("none", "all"):
        return () if spec == "none" else tuple(f"{b}." for b in BLOCKS)
    prefixes: list[str] = []
    for part in spec.split(","):
        m = _PART.fullmatch(part.strip())
        if m is None or (m[2] and m[3]) or (m[2] and int(m[2]) < int(m[1])):
            raise ValueError(f"--take {spec!r}: {part!r} is not convN, convA-B (A <= B), convN.conv or convN.bn")
        first, last = int(m[1]), int(m[2] or m[1])
        layer = {None: "", "conv": "0.", "bn": "1."}[m[3]]
        prefixes += [f"conv{i}.{layer}" for i in range(first, last + 1)]
    return tuple(prefixes)


def hybrid_checkpoint(control: Path, spec: str, seed: int, out: Path) -> Path:
    """A trunk checkpoint: the layers ``spec`` names from the control, the rest from a random trunk seeded as
    ``detect`` seeds a no-init detector's."""
    ckpt = load_checkpoint(control)
    trunk_spec = TrunkSpec.model_validate(ckpt["trunk"]["spec"])
    torch.manual_seed(seed)
    state = AlexNetTrunk(trunk_spec).state_dict()
    control_trunk = {name.removeprefix("trunk."): v for name, v in ckpt["model"].items() if name.startswith("trunk.")}
    for prefix in take_prefixes(spec):
        names = [name for name in control_trunk if name.startswith(prefix)]
        if not names:
            raise ValueError(f"--take {spec!r}: the control's trunk has no layer {prefix.rstrip('.')} "
                             f"(BatchNorm is {'on' if trunk_spec.batch_norm else 'off'})")
        state |= {name: control_trunk[name] for name in names}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {"model": {f"trunk.{name}": v for name, v in state.items()}, "trunk": ckpt["trunk"],
                          "modality": ckpt["modality"], "step": 0,
                          "hybrid": {"control": str(control), "take": spec, "seed": seed}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", type=Path, required=True, help="a finished `student-trainer compare` folder")
    ap.add_argument("--control", type=Path, required=True, help="the control student's checkpoint")
    ap.add_argument("--take", nargs="+", default=["conv1", "conv1-2", "conv1-3", "conv1-4"],
                    help="layer specs taken from the control, one hybrid trunk each (see above)")
    ap.add_argument("--iterations", type=int, default=None, help="detector steps (default: the comparison's)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and runs")
    ap.add_argument("--workers", type=int, default=2, help="detectors trained at once")
    args = ap.parse_args()
    for spec in args.take:
        take_prefixes(spec)  # a bad spec fails before any training
    report = json.loads((args.compare / "compare.json").read_text())
    seeds = report["seeds"]
    iterations = args.iterations or run_settings(args.compare / f"control-seed{seeds[0]}").iterations
    at_comparison = args.iterations is None
    table = {"none": [r["mAP"] for r in report["rows"]["no-init"]["runs"]],
             "all": [r["mAP"] for r in report["rows"]["control"]["runs"]]} if at_comparison else {}
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = {}
        for spec in args.take:
            name = spec.replace(",", "+") + ("" if at_comparison else f"-it{iterations}")
            for seed in seeds:
                ckpt = hybrid_checkpoint(args.control, spec, seed, args.out / f"hybrid-{name}-seed{seed}.pt")
                jobs[spec, seed] = pool.submit(train_detector, run_settings(
                    args.compare / f"control-seed{seed}", trunk_checkpoint=ckpt, out=args.out / f"{name}-seed{seed}",
                    progress=False, iterations=iterations))
        table |= {spec: [jobs[spec, s].result() for s in seeds] for spec in args.take}
    rows = {spec: seed_stats(v) for spec, v in table.items()}
    results = {"compare": str(args.compare), "control": str(args.control), "machine": machine(), "seeds": seeds,
               "iterations": iterations, "rows": {spec: {"mAP": m, "runs": table[spec]} for spec, m in rows.items()}}
    write_results(f"control_layers-{args.out.name}", results)
    print(f"| {args.compare.name}: layers from the control ({iterations} steps) | fine-tuned mAP % "
          f"({len(seeds)} seeds) |\n|---|---|")
    for spec, m in rows.items():
        what = {"none": "none (no init)", "all": "all (the control)"}.get(spec, spec)
        print(f"| {what} | {seed_cell(m)} |")


if __name__ == "__main__":
    main()
