"""Write the synthetic dataset: images per split, one manifest, in parallel, resumable.

Layout under ``out_dir`` (paths in the manifest are relative to it)::

    manifest.jsonl            written last, atomically
    synth_config.json         the config that made the files (a resume with another config is refused)
    rgb/<id>.png              uint8 RGB at t
    depth/<id>.png            uint16 mm clean z-depth (depth frames)
    raw_depth/<id>.png        uint16 mm Kinect-like depth, 0 = missing (depth frames)
    rgb_next/<id>.png         uint8 RGB at t+1 (flow frames)
    flow_gt/<id>.png          exact forward flow t -> t+1, KITTI 16-bit flow PNG, 1/64 px (flow frames)
    flow_occlusion/<id>.png   uint8 visibility of each pixel's point at t+1, codes in
                              :data:`~xmodal_data.synth.flow_gt.OCCLUSION_CODES` (flow frames)
    records/<id>.json         the frame's manifest record, written after its images: a frame is done iff
                              its record and every file it names exist
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import cv2
from tqdm import tqdm

from shared.atomic import write_text_atomic
from shared.errors import ConfigError
from shared.imageio import write_depth_mm, write_image
from shared.manifest import FrameRecord, ManifestHeader, read_manifest, write_manifest
from xmodal_data.flow import write_flow_png
from xmodal_data.synth.config import SPLIT_KINDS, SynthConfig
from xmodal_data.synth.flow_gt import NO_SURFACE
from xmodal_data.synth.frames import frame_id, synthesize_frame
from xmodal_data.synth.motion import MotionConfig

__all__ = ["GENERATOR_VERSION", "MANIFEST_NAME", "generate_synth", "read_synth_config"]

GENERATOR_VERSION = 1
"""Bump when the same config would render different pixels, so stale directories are not resumed."""

MANIFEST_NAME = "manifest.jsonl"
_CONFIG_NAME = "synth_config.json"
_MAX_CHUNK = 16  # frames per task sent to a worker process (fewer when there is little to do)


def _record_path(out_dir: Path, fid: str) -> Path:
    return out_dir / "records" / f"{fid}.json"


def _done_record(out_dir: Path, fid: str) -> FrameRecord | None:
    """The stored record of a finished frame, or None when the frame must be (re)made."""
    path = _record_path(out_dir, fid)
    if not path.is_file():
        return None
    try:
        record = FrameRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if record.rgb_next is not None and record.flow_gt is None:
        return None  # made before ground-truth flow was written: the same pixels, plus the new files
    files = [record.rgb, record.depth, record.raw_depth, record.rgb_next, record.flow_gt, record.flow_occlusion]
    return record if all((out_dir / f).is_file() for f in files if f is not None) else None


def _make_frame(out_dir: Path, config: SynthConfig, split: str, index: int) -> FrameRecord:
    """Render one frame, write its images, then its record (atomic writes throughout)."""
    fid = frame_id(split, index)
    frame = synthesize_frame(config, split, index)
    paths: dict[str, str] = {"rgb": f"rgb/{fid}.png"}
    write_image(out_dir / paths["rgb"], frame.rgb)
    if frame.raw_depth is not None:
        paths |= {"depth": f"depth/{fid}.png", "raw_depth": f"raw_depth/{fid}.png"}
        write_depth_mm(out_dir / paths["depth"], frame.depth)
        write_depth_mm(out_dir / paths["raw_depth"], frame.raw_depth)
    if frame.rgb_next is not None:
        paths["rgb_next"] = f"rgb_next/{fid}.png"
        write_image(out_dir / paths["rgb_next"], frame.rgb_next)
    if frame.flow_gt is not None:
        paths |= {"flow_gt": f"flow_gt/{fid}.png", "flow_occlusion": f"flow_occlusion/{fid}.png"}
        write_flow_png(out_dir / paths["flow_gt"], frame.flow_gt.flow, frame.flow_gt.occlusion != NO_SURFACE)
        write_image(out_dir / paths["flow_occlusion"], frame.flow_gt.occlusion)
    record = FrameRecord(id=fid, split=split, intrinsics=config.intrinsics(), objects=frame.objects, **paths)
    write_text_atomic(_record_path(out_dir, fid), record.model_dump_json(exclude_none=True), durable=False)
    return record


def _make_chunk(out_dir: Path, config: SynthConfig, items: list[tuple[str, int]]) -> list[FrameRecord]:
    """Worker task: make several frames."""
    cv2.setNumThreads(1)  # the pool already uses every core
    return [_make_frame(out_dir, config, split, index) for split, index in items]


def _chunks(items: list[tuple[str, int]], size: int) -> Iterator[list[tuple[str, int]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_config(out_dir: Path, config: SynthConfig) -> None:
    """Record the config in ``out_dir``; refuse to mix frames of a different one (split counts may change)."""
    identity = {"generator_version": GENERATOR_VERSION, **config.model_dump(mode="json", exclude={"splits"})}
    path = out_dir / _CONFIG_NAME
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored.setdefault("motion", MotionConfig().model_dump(mode="json"))  # written before motion was a setting
        stored.setdefault("label_space", "shape")  # written before the label space was a setting
        if stored != identity:
            changed = sorted(k for k in identity.keys() | stored.keys() if identity.get(k) != stored.get(k))
            raise ConfigError(
                f"{out_dir} holds a synth dataset made with different settings ({', '.join(changed)} differ); "
                "use another directory or delete this one"
            )
        return
    write_text_atomic(path, json.dumps(identity, indent=2))


def read_synth_config(out_dir: Path) -> SynthConfig:
    """The config a synth dataset folder was made with (to re-render its frames), split counts from its manifest.

    Raises:
        ConfigError: no ``synth_config.json`` / manifest there, or one made by another generator version.
    """
    out_dir = Path(out_dir)
    path, manifest = out_dir / _CONFIG_NAME, out_dir / MANIFEST_NAME
    if not path.is_file() or not manifest.is_file():
        raise ConfigError(f"{out_dir} is not a finished synth dataset (no {_CONFIG_NAME} or {MANIFEST_NAME})")
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored.setdefault("motion", MotionConfig().model_dump(mode="json"))
    stored.setdefault("label_space", "shape")
    version = stored.pop("generator_version", None)
    if version != GENERATOR_VERSION:
        raise ConfigError(f"{path} was written by synth generator version {version}; this is {GENERATOR_VERSION}")
    counts = read_manifest(manifest).splits()
    return SynthConfig.model_validate({**stored, "splits": {name: counts.get(name, 0) for name in SPLIT_KINDS}})


def generate_synth(out_dir: Path, config: SynthConfig, workers: int | None = None, progress: bool = True) -> Path:
    """Generate (or finish) the synthetic dataset in ``out_dir`` and return its manifest path.

    Frames already complete on disk are kept; the rest are made by ``workers`` processes (default: one per
    CPU; 1 = in this process). Output is identical whatever the worker count or interruption history.
    Workers are spawned, so a script calling this needs the usual ``if __name__ == "__main__":`` guard.

    Raises:
        ConfigError: ``out_dir`` holds frames made with another config, or ``workers`` < 1.
    """
    out_dir = Path(out_dir)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    _check_config(out_dir, config)

    wanted = [(split, i) for split, count in config.splits.items() for i in range(count)]
    records: dict[tuple[str, int], FrameRecord] = {}
    for split, i in wanted:
        done = _done_record(out_dir, frame_id(split, i))
        if done is not None:
            records[split, i] = done
    todo = [item for item in wanted if item not in records]

    with tqdm(total=len(wanted), initial=len(records), disable=not progress, desc="synth", unit="frame") as bar:
        if workers == 1 or len(todo) <= 1:
            for split, i in todo:
                records[split, i] = _make_frame(out_dir, config, split, i)
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (torch, OpenMP) that a fork would copy half-locked.
            size = max(1, min(_MAX_CHUNK, len(todo) // (4 * workers)))
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_make_chunk, out_dir, config, chunk): chunk for chunk in _chunks(todo, size)}
                for future in as_completed(futures):
                    for item, record in zip(futures[future], future.result(), strict=True):
                        records[item] = record
                    bar.update(len(futures[future]))

    header = ManifestHeader(
        dataset="synth",
        classes=config.label_names(),
        description=f"procedural room scenes, {config.height}x{config.width}, seed {config.seed}",
    )
    return write_manifest(out_dir / MANIFEST_NAME, header, (records[item] for item in wanted))
