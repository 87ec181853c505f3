"""Why is every flow detector weak on the synthetic benchmark? Flow quality against ground truth, and a ceiling.

Commands (``epe`` writes JSON + Markdown under ``bench/results/``; all print what they measured):

``epe``: OpenCV DIS (what ``xmodal-data encode`` computes; other estimators with ``--methods``) against the
renderer's exact flow (``flow_gt`` / ``flow_occlusion`` of the manifest) on every flow frame: end-point error
on the pixels whose point is visible at t+1, on moving-object pixels and on the static background (room and
clutter), for the float estimate and for the stored flow image as a student reads it (1/16 px steps,
saturating at +-8 px), next to what the ground truth holds: flow magnitudes, the objects' own motion (flow
minus the flow the pixel would have if the object stood still), and each object's flow contrast with a
3-pixel ring of background around it (what makes an object stand out in a flow image). Frames are
re-rendered from the dataset's ``synth_config.json`` for the instance masks.

``images``: flow images made from the ground-truth flow (or another estimator), and a manifest next to the
original whose ``flow`` points at them (the same frames, ids, RGB and proposals): the input of the ceiling row.

``variant``: the demo dataset's flow splits rendered again with other motion settings (``MotionConfig`` fields
as JSON) into a new folder, DIS-encoded, with ground-truth images; frame t is checked to be byte-identical to
the demo's. ``manifest_dis.jsonl`` / ``manifest_gtflow.jsonl`` there hold the variant's clips and the demo's
other frames (by absolute path), for ``rows``.

``rows``: the flow half of ``xmodal-demo`` on a manifest, reusing a finished demo's teachers: serve the demo's
two stores, train the flow student against each (transfer, control), then ``student-trainer compare
--modality flow`` with the demo's RGB detector. Runs as the demo does (same settings, seed 0 by default).

Usage:
    python -m bench.flow_diagnosis epe --manifest runs/demo/data/synth/manifest.jsonl
    python -m bench.flow_diagnosis images --method gt --manifest runs/demo/data/synth/manifest.jsonl
    python -m bench.flow_diagnosis rows --demo runs/demo --manifest runs/demo/data/synth/manifest_gtflow.jsonl \\
        --out runs/flow-gt
    python -m bench.flow_diagnosis variant --demo runs/demo --motion '{"camera_step_px": [2, 4]}' --out runs/v1
    python -m bench.flow_diagnosis rows --demo runs/demo --manifest runs/v1/manifest_dis.jsonl --out runs/v1-dis \\
        --proposals runs/demo/data/synth/proposals_edge_boxes.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
_RING_PX = 3  # background ring around an object for its flow contrast
_MIN_OBJECT_PX = 20  # objects seen by fewer pixels get no contrast (as the boxes: min_visible_pixels)
_SUMS = ("visible", "object", "background")


# ------------------------------------------------------------------------------------------------- estimators


def _estimator(method: str):
    def estimate(rgb: np.ndarray, rgb_next: np.ndarray) -> np.ndarray:
        from xmodal_data.flow import compute_flow

        return compute_flow(rgb, rgb_next, method)

    return estimate


def _deepflow(rgb: np.ndarray, rgb_next: np.ndarray) -> np.ndarray:
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in (rgb, rgb_next)]
    return cv2.optflow.createOptFlow_DeepFlow().calc(*grey, None)


ESTIMATORS = {"dis": _estimator("dis"), "dis-fine": _estimator("dis-fine"), "farneback": _estimator("farneback"),
              "deepflow": _deepflow}
"""Flow estimators compared against the ground truth: ``dis`` is what ``xmodal-data encode`` computes by default,
``dis-fine`` and ``farneback`` its other methods, DeepFlow (OpenCV contrib) a slower variational reference."""


# ------------------------------------------------------------------------------------------------- epe


def _decode_flow_image(image: np.ndarray) -> np.ndarray:
    """The (u, v) a flow image stands for (:func:`shared.flow_image.encode_flow_image` inverted), pixels."""
    return (image[..., :2].astype(np.float32) - 128.0) / 16.0


def _contrasts(flow: np.ndarray, instance: np.ndarray, labels: list) -> list[float]:
    """Per labelled object: || mean flow on it - mean flow on a ring of other surfaces around it || (px)."""
    out = []
    kernel = np.ones((2 * _RING_PX + 1, 2 * _RING_PX + 1), np.uint8)
    for k, label in enumerate(labels):
        mask = instance == k
        if label is None or mask.sum() < _MIN_OBJECT_PX:
            continue
        ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
        if ring.sum() == 0:
            continue
        out.append(float(np.linalg.norm(flow[mask].mean(axis=0) - flow[ring].mean(axis=0))))
    return out


def frame_stats(job: tuple[str, str, str, str, str | None, str, str, tuple[str, ...]]) -> dict:
    """EPE sums and ground-truth statistics of one flow frame (worker task: paths in, plain numbers out)."""
    from shared.imageio import read_rgb
    from xmodal_data.flow import read_flow_file
    from xmodal_data.synth.config import SynthConfig
    from xmodal_data.synth.flow_gt import ground_truth_flow, read_occlusion
    from xmodal_data.synth.frames import synthesize_frame

    fid, config_json, rgb_path, next_path, image_path, gt_path, occ_path, methods = job
    config = SynthConfig.model_validate_json(config_json)
    _, split, index = fid.split(".")
    frame = synthesize_frame(config, split, int(index))
    gt, visible = read_flow_file(gt_path).astype(np.float64), read_occlusion(occ_path) == 0
    rgb, rgb_next = read_rgb(rgb_path), read_rgb(next_path)
    estimates, seconds = {"zero": np.zeros_like(gt)}, {}
    for method in methods:
        t0 = time.perf_counter()
        estimates[method] = ESTIMATORS[method](rgb, rgb_next).astype(np.float64)
        seconds[method] = time.perf_counter() - t0
    if image_path is not None:
        estimates["flow_image"] = _decode_flow_image(read_rgb(image_path)).astype(np.float64)
    labels = frame.scene.labels
    instance = frame.hits.instance
    moving = np.isin(instance, [k for k, label in enumerate(labels) if label is not None])
    masks = {"visible": visible, "object": visible & moving, "background": visible & ~moving}
    static_next = dataclasses.replace(frame.next_scene, objects=frame.scene.objects)  # the camera moves alone
    still = ground_truth_flow(frame.scene, frame.hits, static_next, config.intrinsics()).flow.astype(np.float64)
    magnitude = np.linalg.norm(gt, axis=-1)
    stats: dict = {"id": fid, "split": split, "pixels": {k: int(m.sum()) for k, m in masks.items()},
                   "occluded_fraction": float(1 - visible.mean()), "seconds": seconds}
    for name, est in estimates.items():
        epe = np.linalg.norm(est - gt, axis=-1)
        stats[f"epe_{name}"] = {k: float(epe[m].sum()) for k, m in masks.items()}
    stats["gt_magnitude"] = {k: float(magnitude[m].sum()) for k, m in masks.items()}
    stats["saturated"] = {k: int((np.abs(gt) > 7.9)[m].any(axis=-1).sum()) for k, m in masks.items()}
    stats["own_motion_object"] = float(np.linalg.norm(gt - still, axis=-1)[masks["object"]].sum())
    for name in ("gt", *methods, *(["flow_image"] if image_path is not None else [])):
        stats[f"contrast_{name}"] = _contrasts(gt if name == "gt" else estimates[name], instance, labels)
    return stats


def _summary(frames: list[dict]) -> dict:
    """Pixel-weighted means over frames (as Sintel/Middlebury average EPE over all pixels of a set)."""
    pixels = {k: sum(f["pixels"][k] for f in frames) for k in _SUMS}
    out: dict = {"frames": len(frames), "pixels": pixels,
                 "occluded_fraction": float(np.mean([f["occluded_fraction"] for f in frames]))}
    for key in [k for k in frames[0] if k.startswith("epe_")] + ["gt_magnitude"]:
        out[key] = {k: sum(f[key][k] for f in frames) / max(pixels[k], 1) for k in _SUMS}
    out["saturated_fraction"] = {k: sum(f["saturated"][k] for f in frames) / max(pixels[k], 1) for k in _SUMS}
    out["own_motion_object"] = sum(f["own_motion_object"] for f in frames) / max(pixels["object"], 1)
    out["ms_per_frame"] = {m: 1000 * float(np.mean([f["seconds"][m] for f in frames])) for m in frames[0]["seconds"]}
    for key in [k for k in frames[0] if k.startswith("contrast_")]:
        values = np.array([c for f in frames for c in f[key]])
        out[key] = {"objects": int(values.size), "mean": float(values.mean()) if values.size else None,
                    "median": float(np.median(values)) if values.size else None,
                    "below_0.5px": float((values < 0.5).mean()) if values.size else None}
    return out


def _epe_markdown(summary: dict[str, dict], methods: tuple[str, ...]) -> str:
    def triple(s: dict, key: str) -> str:
        return " / ".join(f"{s[key][k]:.2f}" for k in _SUMS) if key in s else "n/a"

    first = methods[0]
    lines = [f"| split | frames | EPE {first}: visible / objects / background (px) | EPE flow image | EPE zero "
             f"flow (= mean abs GT) | objects' own motion (px) | object contrast GT / {first} / flow image, median "
             "(px) | objects < 0.5 px contrast (GT) | GT beyond +-7.9 px | occluded |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for split, s in summary.items():
        image = s.get("contrast_flow_image", {}).get("median")
        lines.append(
            f"| {split} | {s['frames']} | {triple(s, f'epe_{first}')} | {triple(s, 'epe_flow_image')} "
            f"| {triple(s, 'epe_zero')} | {s['own_motion_object']:.2f} | {s['contrast_gt']['median']:.2f} / "
            f"{s[f'contrast_{first}']['median']:.2f} / {'n/a' if image is None else f'{image:.2f}'} "
            f"| {100 * s['contrast_gt']['below_0.5px']:.0f} % | {100 * s['saturated_fraction']['visible']:.1f} % "
            f"| {100 * s['occluded_fraction']:.1f} % |")
    if len(methods) > 1:
        s = summary["all"]
        lines += ["", "| estimator (all flow frames) | EPE visible / objects / background (px) "
                  "| object contrast, median (px) | ms per frame (1 core) |", "|---|---|---|---|"]
        lines += [f"| {m} | {triple(s, f'epe_{m}')} | {s[f'contrast_{m}']['median']:.2f} | "
                  f"{s['ms_per_frame'][m]:.0f} |" for m in methods]
        lines.append(f"| ground truth | 0 / 0 / 0 | {s['contrast_gt']['median']:.2f} | |")
    return "\n".join(lines)


def _flow_frames(manifest_path: Path) -> tuple[list, object]:
    from shared.manifest import read_manifest

    m = read_manifest(manifest_path)
    frames = [f for f in m if f.flow_gt is not None and f.flow_occlusion is not None]
    if not frames:
        raise SystemExit(f"{manifest_path}: no frame has flow_gt and flow_occlusion (render with this version of "
                         "`xmodal-data synth`; a rerun into the same folder adds them)")
    return frames, m


def cmd_epe(args: argparse.Namespace) -> None:
    from xmodal_data.synth.dataset import read_synth_config

    frames, m = _flow_frames(args.manifest)
    config_json = read_synth_config(args.manifest.parent).model_dump_json()
    jobs = [(f.id, config_json, str(m.path(f.rgb)), str(m.path(f.rgb_next)),
             str(m.path(f.flow)) if f.flow else None, str(m.path(f.flow_gt)), str(m.path(f.flow_occlusion)),
             tuple(args.methods)) for f in frames if args.limit is None or int(f.id.split(".")[2]) < args.limit]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        stats = list(tqdm(pool.map(frame_stats, jobs, chunksize=8), total=len(jobs), desc="flow frames"))
    splits = sorted({s["split"] for s in stats})
    summary = {split: _summary([s for s in stats if s["split"] == split]) for split in splits}
    summary["all"] = _summary(stats)
    result = {"manifest": str(args.manifest), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "seconds": round(time.perf_counter() - t0, 1), "summary": summary}
    _write(args.out, result, _epe_markdown(summary, tuple(args.methods)))


# ------------------------------------------------------------------------------------------------- images


def cmd_images(args: argparse.Namespace) -> None:
    from xmodal_data.encode import flow_image_manifest

    out = flow_image_manifest(args.manifest, args.method, args.folder, args.name, args.workers, progress=True)
    print(f"wrote {args.method} flow images and {out}")


# ------------------------------------------------------------------------------------------------- variant

_PATH_FIELDS = ("rgb", "depth", "raw_depth", "hha", "rgb_next", "flow", "flow_gt", "flow_occlusion")


def cmd_variant(args: argparse.Namespace) -> None:
    """Render the flow splits of the demo's dataset with other motion settings, encode DIS + ground-truth images."""
    from shared.manifest import read_manifest, write_manifest
    from xmodal_data.encode import encode_manifest
    from xmodal_data.synth.config import SPLIT_KINDS
    from xmodal_data.synth.dataset import generate_synth, read_synth_config
    from xmodal_data.synth.motion import MotionConfig

    base_dir = args.demo / "data" / "synth"
    base = read_synth_config(base_dir)
    motion = MotionConfig.model_validate({**base.motion.model_dump(), **json.loads(args.motion)})
    splits = {name: getattr(base.splits, name) if kind == "flow" else 0 for name, (kind, _) in SPLIT_KINDS.items()}
    config = base.model_copy(update={"motion": motion, "splits": base.splits.model_copy(update=splits)})
    t0 = time.perf_counter()
    manifest = generate_synth(args.out, config, workers=args.workers, progress=False)
    rendered = time.perf_counter() - t0
    encode_manifest(manifest, ["flow"], workers=args.workers, progress=False)
    encoded = time.perf_counter() - t0 - rendered
    ours, theirs = read_manifest(manifest), read_manifest(base_dir / "manifest.jsonl")
    changed = [f.id for f in ours if ours.path(f.rgb).read_bytes() != theirs.path(theirs[f.id].rgb).read_bytes()]
    if changed:
        raise SystemExit(f"frame t differs from the demo's for {len(changed)} frames, e.g. {changed[0]}")
    # The comparison also needs the demo's other splits (its RGB detector is evaluated through them): the same
    # frames, by absolute path; then the ground-truth flow images of the variant's clips.
    others = [f.model_copy(update={k: str(theirs.path(v)) for k in _PATH_FIELDS if (v := getattr(f, k))})
              for f in theirs if f.id not in ours]
    combined = write_manifest(args.out / "manifest_dis.jsonl", theirs.header, [*ours, *others])
    cmd_images(argparse.Namespace(manifest=combined, method="gt", folder=None, name=None, workers=args.workers))
    info = {"motion": motion.model_dump(mode="json"), "frames": len(ours), "render_s": round(rendered, 1),
            "encode_s": round(encoded, 1), "frame_t_identical_to": str(base_dir)}
    (args.out / "variant.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


# ------------------------------------------------------------------------------------------------- rows


def cmd_rows(args: argparse.Namespace) -> None:
    from xmodal_pipeline.procs import ChildProcesses, free_port

    demo, runs = args.demo, args.out
    common = ["--profile", args.profile, "--no-progress"]
    stamp = runs / "timings.json"  # wall seconds per stage, kept across resumed runs
    timings: dict[str, float] = json.loads(stamp.read_text()) if stamp.is_file() else {}
    env = {"OMP_NUM_THREADS": str(args.threads)}
    with ChildProcesses(runs / "logs") as procs:
        for store, name in (("store", "transfer-flow"), ("store-untrained", "control-flow")):
            if (runs / name / "summary.json").is_file():
                continue
            t0 = time.perf_counter()
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = procs.start(f"serve-{store}", "teacher_server.cli", [
                "serve", "--stores", demo / store, "--port", port, "--log-level", "warning"])
            procs.wait_healthy(url, server)
            procs.run(name, "student_trainer.cli", [
                "transfer", "--modality", "flow", "--teacher-url", url, "--manifest", args.manifest,
                "--out", runs / name, "--device", "cpu", "--resume", *common], env=env)
            procs.stop(server)
            timings[name] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {timings[name]} s", flush=True)
        t0 = time.perf_counter()
        procs.run("compare-flow", "student_trainer.cli", [
            "compare", "--modality", "flow", "--manifest", args.manifest, "--out", runs / "compare-flow",
            "--rgb-run", demo / "runs" / "rgb", "--transfer", runs / "transfer-flow" / "checkpoint.pt",
            "--control", runs / "control-flow" / "checkpoint.pt", "--seeds", *map(str, args.seeds),
            *(["--proposals", args.proposals] if args.proposals else []), "--device", "cpu", *common], env=env)
        timings["compare-flow"] = round(timings.get("compare-flow", 0.0) + time.perf_counter() - t0, 1)
    report = (runs / "compare-flow" / "report.md").read_text()
    stamp.write_text(json.dumps(timings, indent=2))
    print(report)
    print(f"timings (s): {timings}")


# ------------------------------------------------------------------------------------------------- main


def _write(out: Path, result: dict, markdown: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['seconds']} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("epe", help="DIS end-point error against the ground-truth flow")
    e.add_argument("--manifest", type=Path, required=True, help="a synth manifest with flow_gt / flow_occlusion")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--limit", type=int, default=None, help="only frames with index < LIMIT in each split")
    e.add_argument("--methods", nargs="+", choices=sorted(ESTIMATORS), default=["dis"],
                   help="flow estimators to compare (the first one gets the per-split table)")
    e.add_argument("--out", type=Path, default=RESULTS / "flow_diagnosis_epe.json")
    g = sub.add_parser("images", help="flow images from the ground truth or an estimator + a manifest using them")
    g.add_argument("--manifest", type=Path, required=True)
    g.add_argument("--method", choices=["gt", "dis", "dis-fine", "farneback"], default="gt")
    g.add_argument("--folder", default=None, help="image folder, relative to the manifest's "
                   "(default flow_<method>_image)")
    g.add_argument("--name", default=None, help="the new manifest, next to the original "
                   "(default manifest_<method>flow.jsonl)")
    g.add_argument("--workers", type=int, default=2)
    r = sub.add_parser("rows", help="flow students + flow comparison on a manifest, with a finished demo's teachers")
    r.add_argument("--demo", type=Path, required=True, help="a finished `xmodal-demo --out` folder")
    r.add_argument("--manifest", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True, help="folder for the students, detectors and logs")
    r.add_argument("--profile", default="quick")
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--proposals", type=Path, default=None, help="proposal cache (default: the manifest folder's)")
    r.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of each process (1, as in the demo, reproduces its numbers)")
    v = sub.add_parser("variant", help="the demo's flow splits rendered with other motion settings")
    v.add_argument("--demo", type=Path, required=True, help="a finished `xmodal-demo --out` folder")
    v.add_argument("--motion", default="{}", help='MotionConfig fields as JSON, e.g. \'{"camera_step_px": [2, 4]}\'')
    v.add_argument("--out", type=Path, required=True, help="dataset folder of the variant")
    v.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    commands = {"epe": cmd_epe, "images": cmd_images, "rows": cmd_rows, "variant": cmd_variant}
    commands[args.command](args)


if __name__ == "__main__":
    main()
