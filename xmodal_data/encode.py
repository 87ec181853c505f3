"""Encode the paired modalities of a manifest: HHA from depth, flow images from (t, t+1) pairs — and, for flow, the
flow image of the mirrored pair (``flow_mirror``: DIS is not mirror-equivariant, so trainers read this as the exact
mirrored input instead of flipping ``flow``).

:func:`flow_image_manifest` makes a second manifest whose flow images come from another source (the
ground-truth flow of a synthetic clip, another estimator), to compare flow sources on one dataset.

Runs frames in parallel processes with a progress bar. Resumable: an image already under its final
name is skipped (every write is temp + rename, so a present file is a complete file). The manifest is
rewritten (atomically) with the new ``hha`` / ``flow`` paths only after every frame succeeded, so a
crash never leaves a manifest pointing at missing files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from shared.camera import Intrinsics
from shared.errors import DataError
from shared.flow_image import encode_flow_image, flip_flow
from shared.imageio import read_depth_m, write_image
from shared.manifest import FrameRecord, Manifest, read_manifest, write_manifest
from xmodal_data.flow import FLOW_METHODS, flow_image_from_pair, read_flow_file
from xmodal_data.hha import compute_hha

__all__ = ["MODALITIES", "EncodeJob", "encode_manifest", "flow_image_manifest"]

MODALITIES = ("hha", "flow")
_FIELDS = {"hha": ("hha",), "flow": ("flow", "flow_mirror")}  # manifest fields each modality's encoding writes


@dataclass(frozen=True)
class EncodeJob:
    """One image to produce: which frame, which modality, from which inputs, to which path."""

    frame_id: str
    modality: str
    inputs: tuple[str, ...]
    output: str
    intrinsics_json: str = ""  # set for HHA jobs (FrameRecord guarantees intrinsics with depth)
    flow_method: str = "dis"


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one frame per process; nested threading only thrashes the 2 cores


def _run_job(job: EncodeJob) -> str:
    if job.modality == "hha":
        intr = Intrinsics.model_validate_json(job.intrinsics_json)
        depth = read_depth_m(job.inputs[0])
        raw = read_depth_m(job.inputs[1]) if len(job.inputs) > 1 else None
        intr.check_image(depth.shape, what=f"depth {job.inputs[0]}")
        img = compute_hha(depth, intr, raw)
    elif job.flow_method == "gt":  # ground truth mirrors exactly: the mirrored pair's flow is flip_flow of it
        flow = read_flow_file(job.inputs[0])
        img = encode_flow_image(flip_flow(flow) if job.modality == "flow_mirror" else flow)
    else:
        img = flow_image_from_pair(job.inputs[0], job.inputs[1], method=job.flow_method,
                                   mirrored=job.modality == "flow_mirror")
    write_image(job.output, img)
    return job.frame_id


def _jobs_for(frame: FrameRecord, manifest: Manifest, modalities: Sequence[str], flow_method: str) -> list[EncodeJob]:
    jobs = []
    if "hha" in modalities and frame.depth is not None:
        inputs = [str(manifest.path(frame.depth))]
        if frame.raw_depth is not None:
            inputs.append(str(manifest.path(frame.raw_depth)))
        out = manifest.path(frame.hha or f"hha/{frame.id}.png")
        intr = frame.intrinsics.model_dump_json() if frame.intrinsics else ""
        jobs.append(EncodeJob(frame.id, "hha", tuple(inputs), str(out), intr))
    if "flow" in modalities and frame.rgb_next is not None:
        inputs = (str(manifest.path(frame.rgb)), str(manifest.path(frame.rgb_next)))
        for field, folder in (("flow", "flow"), ("flow_mirror", "flow_mirror")):
            out = manifest.path(getattr(frame, field) or f"{folder}/{frame.id}.png")
            jobs.append(EncodeJob(frame.id, field, inputs, str(out), flow_method=flow_method))
    return jobs


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _run_all(jobs: list[EncodeJob], workers: int | None, progress: bool) -> dict[str, int]:
    """Run the jobs whose output is missing, in parallel processes; counts per modality and skipped."""
    todo = [j for j in jobs if not Path(j.output).is_file()]
    counts = {"hha": 0, "flow": 0, "flow_mirror": 0, "skipped": len(jobs) - len(todo)}
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="encode", unit="img", disable=not progress)
    if workers == 1 or len(todo) < 4:
        _init_worker()
        for job in todo:
            _run_job(job)
            counts[job.modality] += 1
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            for job, _ in zip(todo, pool.map(_run_job, todo, chunksize=8), strict=True):
                counts[job.modality] += 1
                bar.update()
    bar.close()
    return counts


def encode_manifest(
    manifest_path: str | os.PathLike[str],
    modalities: Sequence[str] = MODALITIES,
    workers: int | None = None,
    flow_method: str = "dis",
    progress: bool = True,
) -> dict[str, int]:
    """Encode HHA and/or flow images for every frame that has the inputs; update the manifest.

    Returns:
        counts: ``{"hha": written, "flow": written, "flow_mirror": written, "skipped": already present}``.
    Raises:
        ValueError: unknown modality.
        ImageReadError / DataError: the first bad input, naming its file (nothing is marked done).
    """
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {list(MODALITIES)}")
    manifest = read_manifest(manifest_path)
    jobs = [j for f in manifest for j in _jobs_for(f, manifest, modalities, flow_method)]
    counts = _run_all(jobs, workers, progress)
    outputs = {(j.frame_id, j.modality): _relative(j.output, manifest.root) for j in jobs}
    frames = [
        f.model_copy(update={k: outputs[(f.id, k)] for m in MODALITIES for k in _FIELDS[m] if (f.id, k) in outputs})
        for f in manifest
    ]
    write_manifest(manifest_path, manifest.header, frames)
    return counts


def flow_image_manifest(
    manifest_path: str | os.PathLike[str],
    method: str = "gt",
    folder: str | None = None,
    name: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Flow images of every clip from another source, and a manifest next to the original that uses them.

    The new manifest is the original with only ``flow`` and ``flow_mirror`` (the mirrored pair's image, for exact
    flips) changed for the clips (frames with ``rgb_next``):
    same ids, RGB, labels, so the same teachers, proposals and RGB detector apply. Resumable (present images
    are kept); the manifest is written once every image exists.

    Args:
        manifest_path: the original manifest (left as it is).
        method: ``"gt"``: each clip's ground-truth flow (``flow_gt``) encoded as a flow image; else a
            :func:`~xmodal_data.flow.compute_flow` method.
        folder: image folder relative to the manifest's (default ``flow_<method>_image``).
        name: file name of the new manifest (default ``manifest_<method>flow.jsonl``).
        workers, progress: as :func:`encode_manifest`.

    Returns:
        The new manifest's path.

    Raises:
        ValueError: unknown method.
        DataError: ``"gt"`` for a manifest with a clip without ``flow_gt`` (names it), or no clip at all.
    """
    if method != "gt" and method not in FLOW_METHODS:
        raise ValueError(f"unknown flow source {method!r}; expected 'gt' or one of {list(FLOW_METHODS)}")
    manifest = read_manifest(manifest_path)
    clips = [f for f in manifest if f.rgb_next is not None]
    if not clips:
        raise DataError(f"{manifest_path}: no frame has an rgb_next (a clip), so there is no flow to encode")
    if method == "gt" and (missing := [f.id for f in clips if f.flow_gt is None]):
        raise DataError(f"{manifest_path}: {len(missing)} clips have no flow_gt, e.g. {missing[0]!r}")
    tag = method.replace("-", "_")
    folder = folder or f"flow_{tag}_image"
    inputs = {f.id: (str(manifest.path(f.flow_gt)),) if method == "gt" else
              (str(manifest.path(f.rgb)), str(manifest.path(f.rgb_next))) for f in clips}
    jobs = [EncodeJob(f.id, field, inputs[f.id], str(manifest.path(f"{folder}{suffix}/{f.id}.png")), flow_method=method)
            for f in clips for field, suffix in (("flow", ""), ("flow_mirror", "_mirror"))]
    _run_all(jobs, workers, progress)
    frames = [f.model_copy(update={"flow": f"{folder}/{f.id}.png", "flow_mirror": f"{folder}_mirror/{f.id}.png"})
              if f.id in inputs else f for f in manifest]
    return write_manifest(manifest.root / (name or f"manifest_{tag}flow.jsonl"), manifest.header, frames)
