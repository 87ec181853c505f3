"""Compression judged downstream: every feature encoding side by side, from bytes to detector mAP.

For each encoding (``shared.features.ENCODINGS``) on the demo teacher's maps:

1. **store**: ``teacher-server precompute --encoding E`` of the demo manifest with the demo's RGB teacher (both
   views, as the demo stores them); stored bytes per map and the ratio vs raw float32 from the store's summary
   (shard index included), max abs / relative error recorded by precompute;
2. **codec**: on the lossless maps of every frame: chunk bytes, relative RMS error ``||x' - x|| / ||x||``, max
   relative error (vs the frame's peak), the *error floor* ``||x' - x||^2 / ||x - mean||^2`` over the held-out
   frames (the held-out residual a perfect student of the encoded targets would still show against the true
   ones), and decode / encode µs per map (best of 3, ``decode_chunk`` into a batch array as the client does);
3. **wire**: the store served by ``teacher-server serve``; batch responses (``--batch`` ids) for every frame:
   body bytes per frame (framing and per-entry JSON included), and ``TeacherClient.get_many`` frames/s;
4. **transfer**: ``student-trainer transfer --modality hha --profile quick --seed S`` against the served store,
   for each ``--transfer-seeds``; the held-out residual ``||pred - t||^2 / ||t - mean(t)||^2`` on ``depth_test``
   (as ``bench/residual.py`` measures it) against the *lossless* targets (what matters: the real teacher) and
   against the encoding's own. One seed is not enough: a perturbation of the targets as small as float16's
   rounding sends SGD down another path, so the residual differs by the seed-to-seed spread whatever the error;
   the mean over seeds is compared, and the paired difference (same seed, same batches) is shown per seed;
5. **detect**: ``student-trainer detect --modality hha --init transfer --trunk-checkpoint <student>`` (the first
   transfer seed's student) fine-tuned and ``--freeze-trunk``, for each ``--detect-seeds`` (all of them for
   ``--all-seeds-for``, the first otherwise).

Every run is resumable: stores, students and detectors that finished are re-read, not redone.

Usage: python -m bench.compression --demo runs/demo --work runs/compression
Prints Markdown tables (BENCHMARKS.md "Compression judged downstream") and writes bench/results/compression.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import REPO, MemoryTargets, machine, served
from bench.residual import predict, residual
from shared.client import TeacherClient
from shared.features import ENCODINGS, decode_batch, decode_chunk, encode_chunk, encoding
from shared.manifest import read_manifest
from shared.modalities import modality
from shared.nets.trunks import AlexNetTrunk, TrunkSpec
from student_trainer.checkpoint import load_checkpoint
from student_trainer.student import TransferModel
from student_trainer.transfer_data import BatchSchedule, TransferBatches
from teacher_server.store import FeatureStore

LOSSLESS = "f32-zstd1"


def run(module: str, *args: object, log: Path) -> None:
    """One CLI run (``python -m module args``) at low priority, output to ``log``; raises naming the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["nice", "-n", "15", sys.executable, "-m", module, *map(str, args)]
    t = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=os.environ).returncode
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")
    print(f"  {module} {args[0]} ... {time.perf_counter() - t:.0f} s", flush=True)


def store_stage(name: str, a: argparse.Namespace) -> dict[str, Any]:
    """Precompute the store of one encoding (skipped when done); its summary per stored map."""
    store = a.work / f"store-{name}"
    col = _collection(store, a) if (store / "zarr.json").is_file() else None
    if col is None or not col.done().all():
        run("teacher_server.cli", "precompute", "--store", store, "--manifests", a.manifest, "--arch", "checkpoint",
            "--weights", a.teacher, "--encoding", name, "--no-progress", log=a.work / "logs" / f"store-{name}.log")
        col = _collection(store, a)
    s = col.summary()
    maps = s["frames_done"] * len(col.views)
    return {"frames": s["frames_done"], "views": len(col.views), "stored_bytes_per_map": s["stored_bytes"] / maps,
            "ratio": s["compression_ratio"], "max_abs_error": s["max_abs_error"],
            "max_relative_error": s["max_relative_error"]}


def _collection(store: Path, a: argparse.Namespace):
    return FeatureStore.open(store).collections[read_manifest(a.manifest).header.dataset]


def _best_of_3(fn) -> float:
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def codec_stage(name: str, truth: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    """Bytes, error and speed of one encoding on the lossless maps ``truth`` (N, C, H, W); ``held`` marks the
    held-out (depth_test) frames of the error floor."""
    enc = encoding(name)
    chunks = [encode_chunk(m, enc) for m in truth]
    shape = truth.shape[1:]
    back = np.empty_like(truth)
    decode_s = _best_of_3(lambda: [decode_chunk(c, shape, enc, out=back[k]) for k, c in enumerate(chunks)])
    encode_s = _best_of_3(lambda: [encode_chunk(m, enc) for m in truth[:500]])
    err = back.astype(np.float64) - truth
    flat = err.reshape(len(truth), -1)
    peak = np.abs(truth).reshape(len(truth), -1).max(axis=1)
    t = truth[held].astype(np.float64)
    return {"chunk_bytes": float(np.mean([len(c) for c in chunks])), "chunk_ratio": truth[0].nbytes / np.mean(
        [len(c) for c in chunks]), "relative_rms_error": float(np.linalg.norm(err) / np.linalg.norm(truth)),
        "max_relative_error": float((np.abs(flat).max(axis=1) / np.maximum(peak, 1e-12)).max()),
        "error_floor_residual": float((err[held] ** 2).sum() / ((t - t.mean()) ** 2).sum()),
        "exact_zeros_kept": bool((back[truth == 0] == 0).all()),
        "decode_us_per_map": decode_s / len(chunks) * 1e6, "encode_us_per_map": encode_s / min(500, len(truth)) * 1e6}


def wire_stage(name: str, a: argparse.Namespace, ids: list[str]) -> dict[str, Any]:
    """Batch-response bytes per frame and ``get_many`` frames/s against the served store."""
    import httpx

    parts = [ids[i : i + a.batch] for i in range(0, len(ids), a.batch)]
    with served(a.work / f"store-{name}") as url:
        body = 0
        with httpx.Client() as h:
            for part in parts:
                r = h.post(f"{url}/features/batch", json={"ids": part})
                r.raise_for_status()
                assert all(e.status == 200 for e in decode_batch(r.content))
                body += len(r.content)
        with TeacherClient(url) as c:
            c.get_many(parts[0])
            seconds = _best_of_3(lambda: [c.get_many(p) for p in parts])
    return {"wire_bytes_per_frame": body / len(ids), "get_many_frames_per_s": len(ids) / seconds}


def transfer_stage(name: str, seed: int, a: argparse.Namespace) -> Path:
    """Train (or re-read) the HHA student against the served store of ``name``; its run folder."""
    out = a.work / f"transfer-{name}-seed{seed}"
    if not (out / "summary.json").is_file():
        with served(a.work / f"store-{name}") as url:
            run("student_trainer.cli", "transfer", "--modality", "hha", "--profile", a.profile, "--teacher-url", url,
                "--manifest", a.manifest, "--out", out, "--seed", seed, "--resume", "--no-progress",
                log=a.work / "logs" / f"{out.name}.log")
    return out


def heldout(run_dir: Path, a: argparse.Namespace, targets: dict[str, MemoryTargets]) -> dict[str, float]:
    """Held-out residual of a student (eval mode, no flips, depth_test) against each target set (by name)."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    trunk = AlexNetTrunk(TrunkSpec(**ckpt["trunk"]["spec"]), in_channels=ckpt["trunk"]["in_channels"])
    model = TransferModel(trunk, next(iter(targets.values())).maps[a.test_ids[0]].shape[0])
    model.load_state_dict(ckpt["model"])
    model = model.to(memory_format=torch.channels_last)
    m = read_manifest(a.manifest)
    by_id = {f.id: f for f in m}
    data = TransferBatches(a.test_ids, [m.path(by_id[i].hha) for i in a.test_ids], modality("hha"),
                           BatchSchedule(len(a.test_ids), 1, 0, False), 0, 0, tuple(ckpt["input_size"]),
                           lambda: None)
    pred = predict(model, data, float(ckpt["target_scale"]))
    return {k: residual(pred, t.get_many(a.test_ids)) for k, t in targets.items()}


def detect_stage(name: str, seed: int, frozen: bool, student: Path, a: argparse.Namespace) -> float:
    """mAP of one HHA detector initialised from ``student`` (re-read when it finished earlier)."""
    out = a.work / f"detect-{name}-{'frozen' if frozen else 'finetuned'}-seed{seed}"
    if not (out / "summary.json").is_file():
        run("student_trainer.cli", "detect", "--modality", "hha", "--init", "transfer", "--trunk-checkpoint",
            student / "checkpoint.pt", *(["--freeze-trunk"] if frozen else []), "--seed", seed, "--manifest",
            a.manifest, "--out", out, "--profile", a.profile, "--resume", "--no-progress",
            log=a.work / "logs" / f"{out.name}.log")
    return float(json.loads((out / "summary.json").read_text())["mAP"])


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "runs": values}


def markdown(res: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables: bytes and error, then downstream."""
    rows = res["encodings"]
    out = ["| encoding | stored B/map | ratio (store) | wire B/frame (batch) | decode µs/map | encode µs/map | "
           "rel. RMS error | max rel. error | error floor (held-out residual) |", "|---" * 9 + "|"]
    for name, r in rows.items():
        s, c, w = r["store"], r["codec"], r.get("wire", {})
        out.append(f"| {name} | {s['stored_bytes_per_map']:.0f} | {s['ratio']:.2f}x | "
                   f"{w.get('wire_bytes_per_frame', float('nan')):.0f} | {c['decode_us_per_map']:.1f} | "
                   f"{c['encode_us_per_map']:.1f} | {c['relative_rms_error']:.2e} | {c['max_relative_error']:.2e} | "
                   f"{c['error_floor_residual']:.1e} |")
    out += ["", "| encoding | held-out residual vs lossless targets: mean ± sd (Δ of means) | paired Δ per seed | "
            "vs own targets | mAP fine-tuned (Δ) | mAP frozen (Δ) |", "|---" * 6 + "|"]
    base = rows[LOSSLESS].get("downstream", {})

    def fmt(d: dict[str, Any] | None, ref: dict[str, Any] | None, pct: bool = True) -> str:
        if not d:
            return "—"
        k, digits = (100, 1) if pct else (1, 4)
        sd = f" ± {k * d['std']:.{digits}f}" if d.get("std") is not None else ""
        delta = f" ({k * (d['mean'] - ref['mean']):+.{digits}f})" if ref and d is not ref else ""
        return f"{k * d['mean']:.{digits}f}{sd} (n={len(d['runs'])}){delta}"

    for name, r in rows.items():
        d = r.get("downstream")
        if not d or "heldout_residual" not in d:
            continue
        paired = ", ".join(f"{v:+.4f}" for v in d["paired_delta"]) if name != LOSSLESS else "—"
        out.append(f"| {name} | {fmt(d['heldout_residual'], base.get('heldout_residual'), False)} | {paired} | "
                   f"{fmt(d['heldout_residual_vs_own'], None, False)} | "
                   f"{fmt(d.get('map_finetuned'), base.get('map_finetuned'))} | "
                   f"{fmt(d.get('map_frozen'), base.get('map_frozen'))} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", type=Path, default=REPO / "runs" / "demo", help="a finished xmodal-demo folder (its "
                   "manifest, RGB teacher and proposals are used)")
    p.add_argument("--manifest", type=Path, help="default: <demo>/data/synth/manifest.jsonl")
    p.add_argument("--teacher", type=Path, help="RGB teacher checkpoint; default: <demo>/runs/rgb/checkpoint.pt")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "compression", help="stores, students, detectors")
    p.add_argument("--encodings", nargs="+", default=list(ENCODINGS), choices=list(ENCODINGS))
    p.add_argument("--stages", nargs="+", default=["codec", "wire", "transfer", "detect"],
                   choices=["codec", "wire", "transfer", "detect"], help="the store stage always runs")
    p.add_argument("--profile", default="quick")
    p.add_argument("--transfer-seeds", type=int, nargs="+", default=[0, 1, 2], help="students per encoding (the "
                   "first one's trunk initialises the detectors)")
    p.add_argument("--detect-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--all-seeds-for", nargs="*", default=[LOSSLESS, "q8-zstd1"],
                   help="encodings whose detectors run every --detect-seeds (the others: the first)")
    p.add_argument("--batch", type=int, default=64, help="ids per batch request (wire stage)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compression.json")
    a = p.parse_args()
    a.manifest = a.manifest or a.demo / "data" / "synth" / "manifest.jsonl"
    a.teacher = a.teacher or a.demo / "runs" / "rgb" / "checkpoint.pt"
    encodings = [LOSSLESS, *(e for e in a.encodings if e != LOSSLESS)]
    m = read_manifest(a.manifest)
    a.test_ids = [f.id for f in m.split("depth_test") if f.hha]
    res: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(a).items()}, "encodings": {}}
    if a.out.is_file():  # keep what an earlier run measured for stages not run now
        res.update({k: v for k, v in json.loads(a.out.read_text()).items() if k not in ("machine", "args")})
    rows = res["encodings"]

    def save() -> None:  # after every stage: hours of training are not lost to a crash in a later one
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2) + "\n")

    for name in encodings:
        rows.setdefault(name, {})["store"] = store_stage(name, a)
    lossless = MemoryTargets(a.work / f"store-{LOSSLESS}", m.header.dataset)
    ids = list(lossless.maps)
    if "codec" in a.stages:
        truth = lossless.get_many(ids)
        held = np.isin(ids, a.test_ids)
        for name in encodings:
            rows[name]["codec"] = codec_stage(name, truth, held)
        save()
    if "wire" in a.stages:
        for name in encodings:
            rows[name]["wire"] = wire_stage(name, a, ids)
        save()
    if "transfer" in a.stages:
        base: list[float] = []
        for name in encodings:
            own = MemoryTargets(a.work / f"store-{name}", m.header.dataset)
            runs = [heldout(transfer_stage(name, seed, a), a, {"lossless": lossless, "own": own})
                    for seed in a.transfer_seeds]
            vs = [r["lossless"] for r in runs]
            base = base or vs
            rows[name].setdefault("downstream", {}).update({
                "transfer_seeds": a.transfer_seeds, "heldout_residual": _stats(vs),
                "heldout_residual_vs_own": _stats([r["own"] for r in runs]),
                "paired_delta": [v - b for v, b in zip(vs, base, strict=True)]})
            save()
    save()
    if "detect" in a.stages:  # every seed of --all-seeds-for first, then the first seed of the others
        for name in sorted(encodings, key=lambda e: e not in a.all_seeds_for):
            student = a.work / f"transfer-{name}-seed{a.transfer_seeds[0]}"
            seeds = a.detect_seeds if name in a.all_seeds_for else a.detect_seeds[:1]
            down = rows[name].setdefault("downstream", {})
            for frozen in (False, True):
                down[f"map_{'frozen' if frozen else 'finetuned'}"] = _stats(
                    [detect_stage(name, s, frozen, student, a) for s in seeds])
                save()
    print(markdown(res))


if __name__ == "__main__":
    main()
