"""Import NYU Depth V2 **raw** video as registered, hole-filled RGB-depth pairs with HHA, for depth transfer.

The paper's depth transfer data: frames sampled every 0.5-1 s from the raw video of the train and val
scenes, never a test scene. Per sampled frame, as the NYU toolbox does it:

1. sync (``get_synched_frames.m``): each depth frame with the RGB frame nearest in host time, ties to the
   later one (:mod:`xmodal_data.importers.nyud2_raw_files`);
2. the little-endian raw depth PGM read, converted to metres and registered to the RGB camera, the RGB
   undistorted (``project_depth_map.m``, :mod:`xmodal_data.importers.nyu_toolbox`, calibration from
   ``camera_params.m`` or ``--calibration``);
3. holes filled (``fill_depth_colorization.m``, alpha 1, with the undistorted RGB:
   :mod:`xmodal_data.importers.depth_fill`);
4. HHA encoded (:func:`xmodal_data.hha.compute_hha`) from the stored millimetre depths with the RGB
   camera's intrinsics, so ``xmodal-data encode`` on the manifest reproduces it.

Sampling: per scene, the first depth frame, then each first depth frame ``every_s`` seconds or more after
the last one taken (host times). Scene splits: :mod:`xmodal_data.importers.nyud2_scenes`.

Scene folders are found under ``root`` as ``root/<scene>`` or one level deeper (``root/<zip name>/<scene>``,
when each zip was extracted into its own folder).

Outputs under ``out_dir`` (``<stem>`` = the depth file's name without ``.pgm``):

* ``rgb/<scene>/<stem>.png``: undistorted RGB; ``raw_depth/<scene>/<stem>.png``: registered depth before
  filling; ``depth/<scene>/<stem>.png``: filled depth (uint16 millimetres, 0 = missing);
  ``hha/<scene>/<stem>.png``;
* ``manifest.jsonl``: frame ids ``nyud2_raw.<scene>.<stem>``, split = the scene's (``train`` / ``val``),
  the RGB camera in every record, no objects (unlabelled);
* ``scenes.json``: per scene its split, frame counts, sync gaps and the sampled (depth, RGB) file pairs;
  scenes found in two splits, requested scenes that are missing, folders no split names;
* ``scene_splits.json``: the scene -> splits mapping used; ``import.json``: the settings stamp.

Resumable: a frame whose four images exist is not recomputed; files are written under final names only
after the frame is complete; the manifest and reports are written last, only when every frame succeeded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ConfigError, DataError
from shared.imageio import write_depth_mm, write_image
from shared.manifest import FrameRecord, ManifestHeader, write_manifest
from xmodal_data.hha import compute_hha
from xmodal_data.importers.depth_fill import FILL_SOLVERS, fill_depth_colorization
from xmodal_data.importers.nyu_toolbox import NYU_CALIBRATION, NyuCalibration, project_depth_map
from xmodal_data.importers.nyud2_raw_files import (
    SceneListing,
    check_netpbm,
    list_scene,
    nearest_later,
    read_depth_pgm,
    read_rgb_ppm,
    sample_every,
)
from xmodal_data.importers.nyud2_scenes import SceneSplits, check_requested_splits, write_scene_splits
from xmodal_data.importers.parallel import run_jobs
from xmodal_data.importers.stamp import check_stamp
from xmodal_data.importers.video import sanitise_stem

__all__ = ["DATASET", "MANIFEST_NAME", "FrameJob", "find_scene_folders", "import_nyud2_raw", "process_frame"]

log = logging.getLogger(__name__)

DATASET = "nyud2_raw"
MANIFEST_NAME = "manifest.jsonl"
_KINDS = ("rgb", "depth", "raw_depth", "hha")


@dataclass(frozen=True)
class FrameJob:
    """One sampled frame: where its inputs are, where its outputs go, how to compute them."""

    scene: str
    folder: str
    depth_name: str
    rgb_name: str
    out_dir: str
    calibration: NyuCalibration
    fill_alpha: float
    fill_solver: str

    def outputs(self) -> dict[str, str]:
        """Output paths relative to ``out_dir``, by manifest field."""
        stem = Path(self.depth_name).stem
        return {kind: f"{kind}/{self.scene}/{stem}.png" for kind in _KINDS}


def process_frame(job: FrameJob) -> bool:
    """Compute and write one frame's missing outputs.

    Returns:
        True when the frame is in the output (written now or earlier), False when its registered depth has
        no measured pixel (a blank Kinect frame: nothing to fill or encode; reported, not imported).

    Raises:
        DataError: a bad input file (named): truncated, wrong size for the calibration, not Kinect data.
    """
    out = Path(job.out_dir)
    rel = job.outputs()
    if all((out / r).is_file() for r in rel.values()):
        return True
    folder, cal = Path(job.folder), job.calibration
    raw = read_depth_pgm(folder / job.depth_name)
    rgb = read_rgb_ppm(folder / job.rgb_name)
    for path, shape in ((folder / job.depth_name, raw.shape), (folder / job.rgb_name, rgb.shape)):
        if shape[:2] != (cal.height, cal.width):
            raise DataError(_size_message(path, shape[1], shape[0], cal))
    registered, rgb_undistorted = project_depth_map(raw, rgb, cal)
    if not ((registered > 0) & (registered != cal.max_depth)).any():
        log.warning("%s: no measured depth after registration; frame skipped", folder / job.depth_name)
        return False
    filled = fill_depth_colorization(rgb_undistorted, registered, job.fill_alpha, cal.max_depth, job.fill_solver)
    # HHA from the millimetres the files hold, so re-encoding the manifest gives the same image.
    raw_m, filled_m = (np.rint(d * 1000.0) / 1000.0 for d in (registered, filled))
    images = {"rgb": rgb_undistorted, "raw_depth": raw_m, "depth": filled_m}
    images["hha"] = compute_hha(filled_m, cal.rgb_intrinsics(), raw_m)
    for kind, r in rel.items():
        if not (out / r).is_file():
            (write_depth_mm if kind in ("depth", "raw_depth") else write_image)(out / r, images[kind])
    return True


def _size_message(path: Path, width: int, height: int, cal: NyuCalibration) -> str:
    return (
        f"{path} is {width}x{height} (WxH) but the calibration is for {cal.width}x{cal.height}: the toolbox "
        "constants are for 640x480 frames; pass --calibration with this camera's numbers and size"
    )


def find_scene_folders(root: Path, names: set[str]) -> tuple[dict[str, Path], list[str]]:
    """Scene folders ``root/<scene>`` or ``root/<group>/<scene>`` whose name is in ``names``.

    Returns:
        ``({scene: folder}, unknown)``: ``unknown`` lists the top-level folders that are no known scene and
        hold none.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        DataError: a scene found twice (names both folders).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"NYUD2 raw root {root} does not exist (expected scene folders such as bedroom_0001)")
    found: dict[str, Path] = {}
    unknown = []

    def add(folder: Path) -> bool:
        if folder.name not in names:
            return False
        if folder.name in found:
            raise DataError(f"scene {folder.name} is found twice: {found[folder.name]} and {folder}; keep one")
        found[folder.name] = folder
        return True

    for top in sorted(p for p in root.iterdir() if p.is_dir()):
        if add(top):
            continue
        held = [add(sub) for sub in sorted(p for p in top.iterdir() if p.is_dir())]
        if not any(held):
            unknown.append(top.name)
    return found, unknown


def _sync_scene(
    scene: str, listing: SceneListing, every_s: float, max_gap_s: float | None
) -> tuple[list[tuple[str, str, float]], dict[str, object]]:
    """Sampled (depth name, RGB name, gap) triples of one scene and its report entry."""
    match = nearest_later(listing.depth_times, listing.rgb_times)
    gaps = np.abs(listing.depth_times - listing.rgb_times[match])
    usable = np.flatnonzero(gaps <= max_gap_s) if max_gap_s is not None else np.arange(gaps.size)
    if usable.size == 0:
        raise DataError(
            f"scene {listing.folder}: no depth frame has an RGB frame within {max_gap_s} s (nearest pair "
            f"{gaps.min():.3f} s apart); timestamps never match"
        )
    taken = usable[sample_every(listing.depth_times[usable], every_s)]
    pairs = [(listing.depth[i], listing.rgb[match[i]], float(gaps[i])) for i in taken]
    report = {
        "folder": str(listing.folder),
        "depth_frames": len(listing.depth),
        "rgb_frames": len(listing.rgb),
        "beyond_max_gap": int(gaps.size - usable.size),
        "sampled": len(pairs),
        "max_gap_s": float(gaps[taken].max()),
        "median_gap_s": float(np.median(gaps[taken])),
    }
    return pairs, report


def _check_inputs(folder: Path, pairs: Sequence[tuple[str, str, float]], cal: NyuCalibration) -> None:
    """Header and size check of every sampled file before any work (a truncated file fails at once)."""
    for depth_name, rgb_name, _ in pairs:
        for name, magic, channels in ((depth_name, b"P5", 1), (rgb_name, b"P6", 3)):
            width, height, _, _ = check_netpbm(folder / name, magic, channels)
            if (width, height) != (cal.width, cal.height):
                raise DataError(_size_message(folder / name, width, height, cal))


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def import_nyud2_raw(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    scene_splits: SceneSplits,
    splits: Sequence[str] = ("train", "val"),
    every_s: float = 1.0,
    calibration: NyuCalibration = NYU_CALIBRATION,
    fill_alpha: float = 1.0,
    fill_solver: str = "iterative",
    max_sync_gap_s: float | None = None,
    allow_missing_scenes: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Import the raw scenes of ``splits`` as synced, registered, filled RGB-depth pairs with HHA.

    Args:
        root: folder of the scene folders (see the module docstring).
        out_dir: output folder.
        scene_splits: scene -> split mapping (:mod:`xmodal_data.importers.nyud2_scenes`).
        splits: splits to import, from ``train`` and ``val`` (``test`` is refused).
        every_s: sample spacing per scene, seconds of host time.
        calibration: Kinect calibration (``camera_params.m`` by default); its size must be the files'.
        fill_alpha: the colorization fill's data-term weight (toolbox: 1).
        fill_solver: ``iterative`` (block Gauss-Seidel, default) or ``direct`` (SuperLU): the same solution.
        max_sync_gap_s: skip depth frames whose nearest RGB frame is farther in time; None: the toolbox keeps
            every depth frame however far its RGB match is.
        allow_missing_scenes: warn about and skip requested scenes that are not under ``root`` (a partial
            download) instead of failing.
        workers: processes (default: all usable CPUs).
        progress: show a progress bar.

    Returns:
        The manifest path, ``out_dir/manifest.jsonl``.

    Raises:
        FileNotFoundError: no root folder.
        ConfigError: bad settings, or ``out_dir`` made with another calibration or fill.
        DataError: a missing scene, a scene without depth or RGB frames or whose timestamps never match, a
            truncated or mis-sized file (each named); nothing of the run is marked done.
    """
    splits = check_requested_splits(splits)
    if not every_s > 0 or not fill_alpha > 0 or (max_sync_gap_s is not None and not max_sync_gap_s > 0):
        raise ConfigError(
            f"every_s ({every_s}), fill_alpha ({fill_alpha}) and max_sync_gap_s ({max_sync_gap_s}) must be > 0"
        )
    if fill_solver not in FILL_SOLVERS:
        raise ConfigError(f"unknown fill solver {fill_solver!r}: expected one of {', '.join(FILL_SOLVERS)}")
    root, out_dir = Path(root), Path(out_dir)
    wanted = sorted(s for s in scene_splits.found if scene_splits.split(s) in splits)
    folders, unknown = find_scene_folders(root, set(scene_splits.found))
    missing = [s for s in wanted if s not in folders]
    if missing and not allow_missing_scenes:
        raise DataError(
            f"{len(missing)} of the {len(wanted)} {'/'.join(splits)} scenes are missing under {root}, e.g. "
            f"{', '.join(str(root / s) for s in missing[:5])}; pass --allow-missing-scenes to import the others"
        )
    if missing:
        log.warning("%d requested scenes are missing under %s and skipped: %s", len(missing), root, ", ".join(missing))
    if unknown:
        log.warning("folders under %s that no split names (not imported): %s", root, ", ".join(unknown))
    conflicts = scene_splits.conflicts()
    if conflicts:
        log.warning("scenes in more than one split (used in the first of test > val > train): %s", conflicts)
    present = [s for s in wanted if s in folders]
    if not present:
        raise DataError(f"no {'/'.join(splits)} scene of {scene_splits.source} is under {root}")

    jobs, reports = [], {}
    for scene in present:
        pairs, reports[scene] = _sync_scene(scene, list_scene(folders[scene]), every_s, max_sync_gap_s)
        _check_inputs(folders[scene], pairs, calibration)
        reports[scene] |= {"split": scene_splits.split(scene), "pairs": [list(p) for p in pairs]}
        jobs += [
            FrameJob(scene, str(folders[scene]), d, r, str(out_dir), calibration, fill_alpha, fill_solver)
            for d, r, _ in pairs
        ]
    check_stamp(out_dir, DATASET, {"calibration": calibration.model_dump(), "fill_alpha": fill_alpha})
    kept = run_jobs(process_frame, jobs, workers, desc=DATASET, unit="frame", progress=progress)

    camera = calibration.rgb_intrinsics()
    records, empty = [], []
    for job, ok in zip(jobs, kept, strict=True):
        if not ok:
            empty.append(f"{job.scene}/{job.depth_name}")
            continue
        rel = job.outputs()
        frame_id = f"{DATASET}.{sanitise_stem(job.scene)}.{Path(job.depth_name).stem}"
        records.append(FrameRecord(id=frame_id, split=scene_splits.split(job.scene), intrinsics=camera, **rel))
    if not records:
        raise DataError(f"every sampled frame of the {len(present)} scenes has an empty depth map")
    write_scene_splits(out_dir / "scene_splits.json", scene_splits)
    _write_json(out_dir / "scenes.json", {
        "splits_source": scene_splits.source, "splits": list(splits), "every_s": every_s,
        "scenes_in_two_splits": conflicts, "missing_scenes": missing, "unknown_folders": unknown,
        "empty_frames": empty, "scenes": reports,
    })
    header = ManifestHeader(
        dataset=DATASET,
        description=(
            f"NYU Depth V2 raw video (Silberman et al., ECCV 2012), {'/'.join(splits)} scenes of "
            f"{scene_splits.source}, one frame per {every_s} s: toolbox sync, registration and colorization fill"
        ),
    )
    return write_manifest(out_dir / MANIFEST_NAME, header, records)
