"""Flip-exact targets, measured: how far the flipped cached map is from the teacher's map of the flipped frame, and
what training on each kind of flip target does to the student and its detectors (issue 18, point 4).

    python -m bench.flips fidelity --manifest M --teacher CKPT [--split depth_transfer --frames 200]
    python -m bench.flips study --manifest M --teacher CKPT --out DIR [--iterations 400 --seeds 0 1 2]

``fidelity``: for the checkpoint teacher (at the frames' own size) and randomly initialised AlexNet and VGG16
(at 160x224), the teacher's maps of ``--frames`` frames and of the same frames mirrored (the store's two views),
then per frame cos(flip(T(x)), T(flip(x))) and the relative L2 error ||flip(T(x)) - T(flip(x))|| / ||T(flip(x))||,
against the cosine of two *different* frames' maps (what a wrong target would score).

``study``: one HHA student per flip mode (exact: the teacher's map of the mirrored frame; mirrored: the cached map
flipped; none: no flips), the same seed and schedule otherwise, each measured on the held-out split
(``--eval-splits``), then detectors from each student (fine-tuned and trunk frozen, ``--seeds``). Every stage is a
command of the product (precompute, serve, transfer, detect) run as a child process, and each is skipped when its
output exists, so a rerun resumes. Writes ``DIR/flips.json`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import REPO, machine
from xmodal_pipeline.procs import ChildProcesses, free_port, poll_healthy

MODES = ("exact", "mirrored", "none")


def _maps(store: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from teacher_server.store import FeatureStore

    col = FeatureStore.open(store).collections[dataset]
    return col.read(slice(None), "identity").astype(np.float64), col.read(slice(None), "mirror").astype(np.float64)


def flip_fidelity(identity: np.ndarray, mirror: np.ndarray) -> dict[str, float]:
    """Per-frame agreement of the flipped identity maps with the mirror maps (N, C, H, W), and the baseline of two
    different frames' maps (frame i against frame i + 1)."""
    flipped = identity[..., ::-1].reshape(len(identity), -1)
    exact = mirror.reshape(len(mirror), -1)

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)

    rel = np.linalg.norm(flipped - exact, axis=1) / (np.linalg.norm(exact, axis=1) + 1e-12)
    other = cos(exact, np.roll(exact, 1, axis=0))
    return {"cosine_flipped_vs_exact": float(cos(flipped, exact).mean()), "relative_l2": float(rel.mean()),
            "cosine_of_different_frames": float(other.mean()), "frames": len(identity)}


def _subset(manifest: Path, split: str, frames: int, out: Path) -> Path:
    from shared.manifest import read_manifest, write_manifest

    m = read_manifest(manifest)
    chosen = [f.model_copy(update={"rgb": str(m.path(f.rgb)), "depth": None, "raw_depth": None, "hha": None,
                                   "rgb_next": None, "flow": None, "flow_mirror": None, "intrinsics": None,
                                   "objects": None}) for f in m.split(split)][:frames]
    return write_manifest(out, m.header, chosen)


def fidelity(args: argparse.Namespace) -> dict:
    """The three teachers' flip fidelity on the same frames."""
    from shared.manifest import read_manifest

    dataset = read_manifest(args.manifest).header.dataset
    results = {"machine": machine(), "split": args.split, "teachers": {}}
    with tempfile.TemporaryDirectory() as tmp, ChildProcesses(Path(tmp) / "logs") as procs:
        sub = _subset(args.manifest, args.split, args.frames, Path(tmp) / "m.jsonl")
        teachers = {"demo teacher (checkpoint, native size)": ["--arch", "checkpoint", "--weights", args.teacher],
                    "AlexNet, random weights, 160x224": ["--arch", "alexnet", "--weights", "random",
                                                         "--input-size", "160", "224"],
                    "VGG16, random weights, 160x224": ["--arch", "vgg16", "--weights", "random",
                                                       "--input-size", "160", "224"]}
        for k, (name, flags) in enumerate(teachers.items()):
            store = Path(tmp) / f"store{k}"
            procs.run(f"precompute{k}", "teacher_server.cli", ["precompute", "--store", store, "--manifests", sub,
                                                               *flags, "--no-progress", "--device", "cpu"])
            results["teachers"][name] = flip_fidelity(*_maps(store, dataset))
    return results


def _stage(procs: ChildProcesses, done: Path, name: str, module: str, args: list) -> None:
    if not done.is_file():
        procs.run(name, module, args)


def study(args: argparse.Namespace) -> dict:
    """Students per flip mode, their held-out residual, and detectors from them."""
    out: Path = args.out
    store = out / "store"
    common = ["--manifest", args.manifest, "--profile", "quick", "--no-progress", "--device", "cpu"]
    results: dict = {"machine": machine(), "iterations": args.iterations, "seeds": args.seeds, "students": {},
                     "detectors": {}}
    with ChildProcesses(out / "logs") as procs:
        _stage(procs, store / "zarr.json", "precompute", "teacher_server.cli", [
            "precompute", "--store", store, "--manifests", args.manifest, "--arch", "checkpoint", "--weights",
            args.teacher, "--splits", "depth_transfer", "depth_test", "--no-progress", "--device", "cpu"])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = procs.start("serve", "teacher_server.cli", ["serve", "--stores", store, "--port", port,
                                                              "--log-level", "warning"])
        poll_healthy(url, 120, server)
        for mode in MODES:
            run = out / f"student-{mode}"
            _stage(procs, run / "summary.json", f"transfer-{mode}", "student_trainer.cli", [
                "transfer", "--modality", "hha", "--teacher-url", url, "--out", run, "--flip", mode,
                "--iterations", args.iterations, "--eval-splits", "depth_test", "--seed", args.student_seed,
                *common])
            results["students"][mode] = json.loads((run / "summary.json").read_text())
        procs.stop(server)
        for mode in MODES:
            for frozen in (False, True):
                maps = []
                for seed in args.seeds:
                    run = out / f"detect-{mode}{'-frozen' if frozen else ''}-seed{seed}"
                    _stage(procs, run / "summary.json", run.name, "student_trainer.cli", [
                        "detect", "--modality", "hha", "--init", "transfer", "--trunk-checkpoint",
                        out / f"student-{mode}" / "checkpoint.pt", "--out", run, "--seed", seed,
                        *(["--freeze-trunk"] if frozen else []), *common])
                    maps.append(json.loads((run / "summary.json").read_text())["mAP"])
                results["detectors"][f"{mode}{', frozen' if frozen else ''}"] = maps
    return results


def _markdown(results: dict) -> str:
    lines = []
    if "teachers" in results:
        lines += [f"Flip fidelity on {next(iter(results['teachers'].values()))['frames']} `{results['split']}` "
                  f"frames ({results['machine']})", "",
                  "| teacher | cos(flip(T(x)), T(flip(x))) | relative L2 error | cos of two different frames |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {r['cosine_flipped_vs_exact']:.3f} | {r['relative_l2']:.3f} | "
                  f"{r['cosine_of_different_frames']:.3f} |" for name, r in results["teachers"].items()]
    if "students" in results:
        lines += ["", f"HHA students ({results['iterations']} steps) and their detectors ({len(results['seeds'])} "
                  "seeds, mean ± sd)", "",
                  "| flips | held-out residual | held-out cosine | final training loss | fine-tuned mAP | "
                  "trunk-frozen mAP |", "|---|---|---|---|---|---|"]
        for mode in MODES:
            s = results["students"][mode]
            cells = []
            for key in (mode, f"{mode}, frozen"):
                m = 100 * np.asarray(results["detectors"][key])
                cells.append(f"{m.mean():.1f} ± {m.std(ddof=1) if len(m) > 1 else 0:.1f}")
            lines.append(f"| {mode} | {s['held_out']['residual']:.3f} | {s['held_out']['cosine']:.3f} | "
                         f"{s['final']['loss']:.3f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fidelity", help="flipped cached maps vs the teacher's maps of flipped frames")
    f.add_argument("--split", default="depth_transfer")
    f.add_argument("--frames", type=int, default=200)
    f.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "flip_fidelity.json")
    s = sub.add_parser("study", help="students per flip mode and their detectors")
    s.add_argument("--out", type=Path, required=True, help="folder for the stores, runs and flips.json")
    s.add_argument("--iterations", type=int, default=400)
    s.add_argument("--student-seed", type=int, default=0)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="detector seeds")
    for q in (f, s):
        q.add_argument("--manifest", type=Path, required=True)
        q.add_argument("--teacher", type=str, required=True, help="the demo's RGB detector checkpoint")
    args = p.parse_args()
    results = fidelity(args) if args.command == "fidelity" else study(args)
    path = args.out if args.command == "fidelity" else args.out / "flips.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(_markdown(results))


if __name__ == "__main__":
    main()
