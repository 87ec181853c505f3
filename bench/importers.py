"""Per-frame cost of the real-data importers, and what the NYUD2 hole fill does to HHA.

Fill (real NYUD2 frame ``../shared/data/nyud2_sample/gupta_demo_*``, 425x560: RGB, raw depth, and the depth
NYU filled for the labelled set): the toolbox's colorization fill solved directly (the reference), by the
importer's block Gauss-Seidel (the default), and three other fills for comparison: the colorization weights
with measured pixels held fixed (only the holes solved), OpenCV's Navier-Stokes inpainting, and NYU's own
filled depth. Each row: time, mean |depth difference| to the reference (all pixels, holes) and mean |HHA
difference| per channel (disparity, height, angle) with HHA of the raw depth's missing pixels excluded alike.

Per-frame cost, one process, OpenCV on one thread (wall clock and this process's CPU time; the machine's
load average is printed, since other jobs may share it):

* ``nyud2-raw``: one 640x480 frame through the importer's steps with the toolbox constants: read the PGM and
  PPM, register, fill, HHA, write the 4 PNGs. The depth is real: img_5001's filled depth in Kinect units with
  the raw depth's holes inside Gupta's crop (sensor shadows; registration adds the border band where the
  depth camera sees nothing); the RGB is the demo RGB resized to 640x480;
* ``ucf101``: one 320x240, 25 fps, ``--ucf-frames``-frame XviD clip (UCF101's mean clip is about 7 s),
  5 pairs: decoding up to the last needed frame, 5 DIS flows, 15 PNGs and the marker; also per pair;
* ``jhmdb``: one 320x240 frame: reading it, its box, the DIS flow of (t, t+1), the flow PNG.

Usage: python -m bench.importers [--repeat 3] [--ucf-frames 180] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import scipy.sparse.linalg as spl

from bench.common import REPO, machine
from shared.camera import NYUD2_KINECT
from shared.imageio import read_depth_m, read_rgb
from tests.xmodal_data.fixtures_real_layouts import (
    moving_square_frames,
    raw_from_metres,
    write_depth_pgm,
    write_jhmdb_splits,
    write_jhmdb_video,
    write_rgb_ppm,
    write_ucf101_video,
)
from xmodal_data.hha import compute_hha
from xmodal_data.importers import jhmdb, nyud2_raw, ucf101
from xmodal_data.importers.depth_fill import colorization_system, fill_depth_colorization
from xmodal_data.importers.nyu_toolbox import NYU_CALIBRATION, project_depth_map
from xmodal_data.importers.nyud2 import GUPTA_CROP
from xmodal_data.importers.nyud2_raw_files import read_depth_pgm, read_rgb_ppm

SAMPLE = REPO.parent / "shared" / "data" / "nyud2_sample"


def _timed(fn: Callable[[], object], repeat: int) -> tuple[object, float, float]:
    """Result of the last call, median wall and median CPU seconds over ``repeat`` calls."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return result, float(np.median(walls)), float(np.median(cpus))


def _fill_holes_only(rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    a, _, known, scale = colorization_system(rgb / 255.0, depth)
    unknown = ~known
    x = np.where(known, np.minimum(depth.ravel() / scale, 1), 0.0)
    a_u = a[unknown]  # the holes' equations (no data term): sum of weighted neighbours = the pixel
    x[unknown] = spl.spsolve(a_u[:, unknown].tocsc(), -(a_u[:, known] @ x[known]))
    return x.reshape(depth.shape) * scale


def fill_rows(repeat: int) -> list[dict[str, object]]:
    rgb = read_rgb(SAMPLE / "gupta_demo_rgb.png")
    raw = read_depth_m(SAMPLE / "gupta_demo_rawdepth_mm.png")
    camera = NYUD2_KINECT.crop(**GUPTA_CROP)
    holes = raw == 0
    methods: dict[str, Callable[[], np.ndarray]] = {
        "colorization, direct (toolbox)": lambda: fill_depth_colorization(rgb, raw, solver="direct"),
        "colorization, block Gauss-Seidel (default)": lambda: fill_depth_colorization(rgb, raw),
        "colorization weights, holes only": lambda: _fill_holes_only(rgb, raw),
        "cv2.inpaint Navier-Stokes (r=5)": lambda: cv2.inpaint(raw.astype(np.float32), holes.astype(np.uint8), 5,
                                                               cv2.INPAINT_NS).astype(np.float64),
        "NYU's filled depth (labelled set)": lambda: read_depth_m(SAMPLE / "gupta_demo_depth_mm.png"),
    }
    reference = hha_ref = None
    rows = []
    for name, fn in methods.items():
        depth, wall, cpu = _timed(fn, repeat)
        depth = np.rint(np.asarray(depth) * 1000) / 1000  # as the importer stores it
        hha = compute_hha(depth, camera, raw).astype(np.int16)
        if reference is None:
            reference, hha_ref = depth, hha
        diff = np.abs(depth - reference) * 1000
        rows.append({
            "fill": name, "wall_s": wall, "cpu_s": cpu, "depth_mm_all": float(diff.mean()),
            "depth_mm_holes": float(diff[holes].mean()),
            "hha_abs_diff": [float(v) for v in np.abs(hha - hha_ref).mean(axis=(0, 1))],
        })
    return rows


def nyud2_raw_costs(work: Path, repeat: int) -> dict[str, float]:
    filled_m = read_depth_m(SAMPLE / "img_5001_depth_0.1mm.png", units_per_metre=10000.0)
    missing = read_depth_m(SAMPLE / "img_5001_rawdepth_0.1mm.png", units_per_metre=10000.0) == 0
    inside = np.zeros_like(missing)
    inside[45:470, 40:600] = True
    raw_m = np.where(missing & inside, 0.0, filled_m)
    rgb = cv2.resize(read_rgb(SAMPLE / "gupta_demo_rgb.png"), (640, 480), interpolation=cv2.INTER_LINEAR)
    scene = work / "raw" / "bedroom_0001"
    scene.mkdir(parents=True)
    write_depth_pgm(scene / "d-1315166485.000000-1000000.pgm", raw_from_metres(raw_m))
    write_rgb_ppm(scene / "r-1315166485.010000-1000000.ppm", rgb)
    cal = NYU_CALIBRATION
    depth_raw, rgb_in = read_depth_pgm(next(scene.glob("d-*"))), read_rgb_ppm(next(scene.glob("r-*")))
    registered, rgb_u = project_depth_map(depth_raw, rgb_in, cal)
    filled = fill_depth_colorization(rgb_u, registered)
    stages = {
        "read": lambda: (read_depth_pgm(next(scene.glob("d-*"))), read_rgb_ppm(next(scene.glob("r-*")))),
        "register": lambda: project_depth_map(depth_raw, rgb_in, cal),
        "fill": lambda: fill_depth_colorization(rgb_u, registered),
        "fill_direct": lambda: fill_depth_colorization(rgb_u, registered, solver="direct"),
        "hha": lambda: compute_hha(np.rint(filled * 1000) / 1000, cal.rgb_intrinsics(), registered),
    }
    costs = {}
    for name, fn in stages.items():
        _, wall, cpu = _timed(fn, repeat)
        costs[f"{name}_wall_ms"], costs[f"{name}_cpu_ms"] = 1000 * wall, 1000 * cpu
    job = nyud2_raw.FrameJob("bedroom_0001", str(scene), next(scene.glob("d-*")).name, next(scene.glob("r-*")).name,
                             str(work / "out"), cal, 1.0, "iterative")

    def frame() -> None:
        shutil.rmtree(work / "out", ignore_errors=True)
        nyud2_raw.process_frame(job)

    _, wall, cpu = _timed(frame, repeat)
    costs |= {"frame_wall_ms": 1000 * wall, "frame_cpu_ms": 1000 * cpu, "holes": float((registered == 0).mean())}
    return costs


def ucf101_costs(work: Path, repeat: int, n_frames: int) -> dict[str, float]:
    rel = write_ucf101_video(work, "YoYo", 8, 1, moving_square_frames(n_frames, 240, 320, speed=2))
    out = work / "ucf_out"
    job = ucf101.VideoJob(str(work / "UCF-101" / rel), "YoYo", rel.stem, str(out), 5, "dis")

    def video() -> None:
        shutil.rmtree(out, ignore_errors=True)
        ucf101.process_video(job)

    _, wall, cpu = _timed(video, repeat)
    return {"video_frames": n_frames, "video_wall_ms": 1000 * wall, "video_cpu_ms": 1000 * cpu,
            "pair_wall_ms": 200 * wall, "pair_cpu_ms": 200 * cpu}


def jhmdb_costs(work: Path, repeat: int) -> dict[str, float]:
    n = 34  # JHMDB clips hold 15-40 frames
    masks = np.zeros((240, 320, n), np.uint8)
    masks[60:200, 100:180] = 1
    write_jhmdb_video(work / "JHMDB", "wave", "clip", moving_square_frames(n, 240, 320), masks)
    write_jhmdb_splits(work / "JHMDB", "wave", {"clip": 1})
    out = work / "jhmdb_out"
    job = jhmdb.VideoJob("wave", "clip", str(work / "JHMDB" / "Rename_Images" / "wave" / "clip"),
                         str(work / "JHMDB" / "puppet_mask" / "wave" / "clip" / "puppet_mask.mat"), "flow_train",
                         "clip", str(out), "dis")

    def video() -> None:
        shutil.rmtree(out, ignore_errors=True)
        jhmdb.process_video(job)

    _, wall, cpu = _timed(video, repeat)
    return {"frame_wall_ms": 1000 * wall / (n - 1), "frame_cpu_ms": 1000 * cpu / (n - 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="calls per measurement (the median is reported)")
    ap.add_argument("--ucf-frames", type=int, default=180, help="frames of the UCF101-like clip")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {
            "machine": machine(), "load_average_before": load, "fill": fill_rows(args.repeat),
            "nyud2_raw": nyud2_raw_costs(work, args.repeat), "ucf101": ucf101_costs(work, args.repeat,
                                                                                     args.ucf_frames),
            "jhmdb": jhmdb_costs(work, args.repeat), "load_average_after": os.getloadavg(),
        }
    print(f"{results['machine']}; load average {load[0]:.2f} before, {results['load_average_after'][0]:.2f} after\n")
    print("| fill | wall s | CPU s | mean abs diff mm (all / holes) | mean abs diff HHA (D, H, A) |")
    print("|---|---|---|---|---|")
    for r in results["fill"]:
        hha = ", ".join(f"{v:.3f}" for v in r["hha_abs_diff"])
        print(f"| {r['fill']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['depth_mm_all']:.2f} / "
              f"{r['depth_mm_holes']:.2f} | {hha} |")
    n, u, j = results["nyud2_raw"], results["ucf101"], results["jhmdb"]
    print("\n| importer | unit | wall ms | CPU ms |\n|---|---|---|---|")
    for stage in ("read", "register", "fill", "fill_direct", "hha", "frame"):
        label = "frame (read, register, fill, HHA, write)" if stage == "frame" else stage
        print(f"| nyud2-raw 640x480 | {label} | {n[f'{stage}_wall_ms']:.1f} | {n[f'{stage}_cpu_ms']:.1f} |")
    print(f"| ucf101 320x240 | video of {u['video_frames']} frames, 5 pairs | {u['video_wall_ms']:.0f} | "
          f"{u['video_cpu_ms']:.0f} |")
    print(f"| ucf101 320x240 | pair (incl. its share of decoding) | {u['pair_wall_ms']:.0f} | {u['pair_cpu_ms']:.0f} |")
    print(f"| jhmdb 320x240 | frame (read, box, flow, write) | {j['frame_wall_ms']:.1f} | {j['frame_cpu_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
