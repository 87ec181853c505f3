"""The benchmark's shape, one change at a time (issue 18, point 2): comparisons on a finished ``xmodal-demo`` folder
with one thing changed — the students' steps, the teacher, the labelled frames, the flow images, the fine-tuned
detectors' trunk lr — and the rows that the change cannot move reused from the demo's own comparison (every run is
deterministic given its settings).

``rows``: per teacher (the demo's ``adapted`` / ``imagenet``, or an external store with ``--store`` and its RGB
checkpoint ``--copy-rgb``) a student (the demo's, or trained here with ``--iterations``, against the teacher's store
served as a process), then ``student-trainer compare`` with the demo's RGB detector; ``--reuse`` links the demo
comparison's finished runs of the named rows (e.g. ``no-init,copy-rgb,control,rgb``) instead of training them
again (with a ``--trunk-lr-mult`` other than the demo's, only their frozen runs: the factor moves the fine-tuned
ones); the control student is the demo's. Writes ``<out>/report.md`` (the merged table and the goals, as the demo's
report) and ``<out>/results.json``; resumable.

``manifest``: a copy of the demo's manifest whose labelled training splits keep only their first ``--frames`` frames
(the same frames, proposals and test split; ``--gt`` also writes the exact-flow manifest's copy).

Usage:
    python -m bench.shape rows --demo runs/demo-paper --variant hha --teachers adapted --iterations 400 \\
        --reuse no-init,copy-rgb,control,rgb --out runs/shape/hha-400
    python -m bench.shape rows --demo runs/demo-paper --variant hha --teachers adapted \\
        --store runs/x/old-quick/store --copy-rgb runs/x/old-quick/runs/rgb/checkpoint.pt --name random-init \\
        --reuse no-init,control,rgb --out runs/shape/hha-random-adapted
    python -m bench.shape rows --demo runs/demo-paper --variant flow --trunk-lr-mult 1 \\
        --reuse no-init,copy-rgb,transfer,control,rgb --out runs/shape/flow-trunk-lr1
    python -m bench.shape manifest --demo runs/demo-paper --frames 30
    python -m bench.shape rows --demo runs/demo-paper --variant hha --teachers adapted imagenet \\
        --manifest runs/demo-paper/data/synth/manifest_train30.jsonl --out runs/shape/hha-30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shared.manifest import read_manifest, write_manifest
from shared.settings import env_name

_TRAIN_SPLITS = ("depth_train", "flow_train")


def cmd_manifest(args: argparse.Namespace) -> None:
    data = args.demo / "data" / "synth"
    for name in ("manifest.jsonl", *(["manifest_gtflow.jsonl"] if args.gt else [])):
        m = read_manifest(data / name)
        kept, seen = [], dict.fromkeys(_TRAIN_SPLITS, 0)
        for f in m:
            if f.split in seen:
                seen[f.split] += 1
                if seen[f.split] > args.frames:
                    continue
            kept.append(f)
        out = write_manifest(data / name.replace(".jsonl", f"_train{args.frames}.jsonl"), m.header, kept)
        print(f"wrote {out}: {read_manifest(out).splits()}")


def cmd_rows(args: argparse.Namespace) -> None:
    from student_trainer.detect_settings import DetectSettings
    from xmodal_pipeline.demo import TEACHERS, Demo, DemoSettings, Teacher
    from xmodal_pipeline.procs import ChildProcesses, free_port
    from xmodal_pipeline.report import goals, goals_markdown, merge_comparisons
    from xmodal_pipeline.stages import link_finished_runs, summaries_exist

    settings = DemoSettings.model_validate(json.loads((args.demo / "report" / "results.json").read_text())["settings"])
    demo = Demo(settings, procs=None)  # type: ignore[arg-type]  # paths only
    variant = next(v for v in demo.variants if v.name == args.variant)
    manifest = args.manifest or variant.manifest
    common = ["--profile", demo.child, "--no-progress", "--device", "cpu"]
    amp = args.amp if args.amp is not None else settings.amp
    env = {"OMP_NUM_THREADS": str(args.threads), **({} if amp is None else {env_name(DetectSettings, "amp"):
                                                                          str(amp).lower()})}
    seeds = [str(x) for x in args.seeds]
    factor = settings.trunk_lr_mult if args.trunk_lr_mult is None else args.trunk_lr_mult
    kinds = ("", "-frozen") if factor == settings.trunk_lr_mult else ("-frozen",)  # what --reuse may link
    out = args.out
    stamp = out / "timings.json"
    timings: dict[str, float] = json.loads(stamp.read_text()) if stamp.is_file() else {}
    teachers = [TEACHERS[t] for t in args.teachers]
    if args.store:
        teachers = [Teacher(args.name, str(args.store), args.name, str(args.copy_rgb), args.name)]
    compares = {}
    with ChildProcesses(out / "logs") as procs:
        for i, t in enumerate(teachers):
            student = demo.student(t, variant) if not args.store else None
            if args.iterations is not None or args.store:
                student = out / f"student-{t.name}-{variant.name}"
                if not summaries_exist([student]):
                    t0 = time.perf_counter()
                    store = Path(t.store) if args.store else settings.out / t.store
                    port = free_port()
                    server = procs.start(f"serve-{t.name}", "teacher_server.cli", [
                        "serve", "--stores", store, "--port", port, "--log-level", "warning"])
                    url = f"http://127.0.0.1:{port}"
                    procs.wait_healthy(url, server)
                    procs.run(student.name, "student_trainer.cli", [
                        "transfer", "--modality", variant.modality, "--teacher-url", url, "--manifest", manifest,
                        "--out", student, "--iterations", args.iterations or settings.transfer_iterations,
                        "--eval-splits", "depth_test" if variant.modality == "hha" else "flow_test",
                        *(["--amp" if amp else "--no-amp"] if amp is not None else []), "--resume", *common],
                        env=env)
                    procs.stop(server)
                    timings[student.name] = round(time.perf_counter() - t0, 1)
            run = out / f"compare-{variant.name}-{t.name}"
            if args.reuse:
                source = demo.compare_run(TEACHERS.get(t.name, demo.teachers[0]), variant)
                rows = [r for r in args.reuse.split(",") if r != "copy-rgb" or not args.store]
                names = ["rgb"] * ("rgb" in rows) + [f"{r}{f}-seed{x}" for r in rows if r != "rgb"
                                                     for f in kinds for x in seeds]
                link_finished_runs(source, run, names)
            if i:
                link_finished_runs(out / f"compare-{variant.name}-{teachers[0].name}", run,
                                   ["rgb", *(f"no-init{f}-seed{x}" for f in ("", "-frozen") for x in seeds)])
            control = (["--control", demo.student(TEACHERS["untrained"], variant) / "checkpoint.pt"]
                       if i == 0 and not args.no_control else [])
            copy = args.copy_rgb if args.store else settings.out / "runs" / t.checkpoint
            t0 = time.perf_counter()
            procs.run(run.name, "student_trainer.cli", [
                "compare", "--modality", variant.modality, "--manifest", manifest, "--out", run,
                "--rgb-run", demo.runs / "rgb", "--copy-rgb", copy, "--transfer", student / "checkpoint.pt",
                *control, "--seeds", *seeds, "--trunk-lr-mult", factor, *common], env=env)
            timings[run.name] = round(timings.get(run.name, 0.0) + time.perf_counter() - t0, 1)
            compares[t.name] = json.loads((run / "compare.json").read_text())
    table = merge_comparisons(compares, {t.name: t.label for t in teachers}, variant.title)
    checks = goals(table, list(compares))
    from student_trainer.compare import comparison_markdown

    md = comparison_markdown(table) + "\n" + goals_markdown(checks)
    (out / "report.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                  "table": table, "goals": checks, "timings": timings}, indent=2))
    stamp.write_text(json.dumps(timings, indent=2))
    print(md)
    print(f"timings (s): {timings}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest", help="a copy of the demo's manifest with fewer labelled training frames")
    m.add_argument("--demo", type=Path, required=True)
    m.add_argument("--frames", type=int, required=True, help="labelled frames kept per training split")
    m.add_argument("--gt", action="store_true", help="also the exact-flow manifest")
    r = sub.add_parser("rows", help="students and comparisons with one change, reusing the demo's other rows")
    r.add_argument("--demo", type=Path, required=True, help="a finished `xmodal-demo --out` folder")
    r.add_argument("--variant", required=True, help="hha, flow or flow-gt (the demo's variants)")
    r.add_argument("--manifest", type=Path, default=None, help="default: the variant's manifest in the demo")
    r.add_argument("--teachers", nargs="+", default=["adapted"], choices=["adapted", "imagenet"])
    r.add_argument("--store", type=Path, default=None, help="an external teacher store instead")
    r.add_argument("--copy-rgb", type=Path, default=None, help="with --store: the RGB checkpoint of that teacher")
    r.add_argument("--name", default="external", help="with --store: its name in folders and tables")
    r.add_argument("--iterations", type=int, default=None, help="train students of this many steps here")
    r.add_argument("--reuse", default="", help="rows linked from the demo's comparison (comma-separated keys)")
    r.add_argument("--no-control", action="store_true", help="no control rows")
    r.add_argument("--trunk-lr-mult", type=float, default=None,
                   help="the fine-tuned detectors' trunk lr factor (default: the demo's)")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: the demo's")
    r.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the children")
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    {"manifest": cmd_manifest, "rows": cmd_rows}[args.command](args)


if __name__ == "__main__":
    main()
