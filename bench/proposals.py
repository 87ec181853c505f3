"""Benchmark the built-in proposal methods: recall at IoU 0.5 of the top 500 / 2000 boxes, seconds per frame.

Runs every method of :data:`student_trainer.proposals.methods.METHODS` on the synthetic test splits (``depth_test``
frames carry HHA, ``flow_test`` frames a flow image), one frame at a time in this process with OpenCV on one
thread, and prints a Markdown table. Time is per frame for :func:`~student_trainer.proposals.methods.propose`
(image reading excluded): wall clock and this process's CPU time, the second being the fairer number on a
shared machine (the load average is printed too).

Without ``--manifest`` it makes the quick profile's test splits (250 + 250 frames, 96x128) in ``--data``.

Usage: python -m bench.proposals [--manifest M] [--frames 100] [--methods hybrid edge_boxes] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2

from bench.common import machine
from shared.manifest import Manifest, read_manifest
from student_trainer.proposals.generate import frame_inputs
from student_trainer.proposals.methods import METHODS, propose
from student_trainer.proposals.recall import proposal_recall

TOP_K = (100, 500, 2000)


def quick_test_splits(data: Path) -> Path:
    """The synth quick profile's test splits (same pixels as in the full quick set), HHA and flow encoded."""
    from xmodal_data.encode import encode_manifest
    from xmodal_data.synth.config import SplitCounts, SynthConfig
    from xmodal_data.synth.dataset import generate_synth

    config = SynthConfig.profile("quick")
    counts = {name: 0 for name in SplitCounts.model_fields} | {
        "depth_test": config.splits.depth_test, "flow_test": config.splits.flow_test}
    config = config.model_copy(update={"splits": SplitCounts(**counts)})
    manifest = generate_synth(data, config, workers=os.cpu_count(), progress=True)
    encode_manifest(manifest, progress=True)
    return manifest


def measure(manifest: Manifest, split: str, method: str, frames: int | None, max_boxes: int) -> dict[str, float]:
    records = [f for f in manifest.split(split) if f.labeled][:frames]
    boxes, wall, cpu = {}, 0.0, 0.0
    propose(frame_inputs(manifest, records[0]), method, max_boxes)  # warm-up: lazy imports, first-call setup
    for f in records:
        inputs = frame_inputs(manifest, f)
        w0, c0 = time.perf_counter(), time.process_time()
        boxes[f.id] = propose(inputs, method, max_boxes)[0]
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    subset = Manifest(manifest.header, records, manifest.root, manifest.source)
    out = proposal_recall(boxes, subset, split, top_k=TOP_K)
    return out | {"wall_s_per_frame": wall / len(records), "cpu_s_per_frame": cpu / len(records)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="a manifest with labelled test splits (default: make them)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/xmodal-bench-proposals"),
                    help="where to make the quick profile's test splits when no --manifest is given")
    ap.add_argument("--splits", nargs="+", default=["depth_test", "flow_test"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--frames", type=int, default=None, help="first N labelled frames of each split (default all)")
    ap.add_argument("--max-boxes", type=int, default=2000)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    cv2.setNumThreads(1)
    manifest = read_manifest(args.manifest or quick_test_splits(args.data))
    rows = []
    for split in args.splits:
        for method in args.methods:
            r = measure(manifest, split, method, args.frames, args.max_boxes)
            rows.append({"split": split, "method": method, **r})
            print(f"{split} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    load = os.getloadavg()[0]
    print(f"\n{machine()}; OpenCV {cv2.__version__} on 1 thread; load average {load:.1f} at the end\n")
    print("| split | method | frames | objects | recall@100 | recall@500 | recall@2000 | boxes/frame "
          "| CPU s/frame | wall s/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['split']} | {r['method']} | {r['frames']:.0f} | {r['objects']:.0f} | {r['recall@100']:.3f} "
              f"| {r['recall@500']:.3f} | {r['recall@2000']:.3f} | {r['mean_proposals']:.0f} "
              f"| {r['cpu_s_per_frame']:.3f} | {r['wall_s_per_frame']:.3f} |")
    result = {"machine": machine(), "opencv": cv2.__version__, "load_average": load,
              "manifest": manifest.source, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
