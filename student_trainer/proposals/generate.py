"""Proposals for the frames of a manifest: parallel over frames, progress bar, cached in one resumable ``.npz``.

The cache is the ragged ``.npz`` of :mod:`student_trainer.proposals.files`, rewritten atomically (temp file +
rename) every ``checkpoint_s`` seconds and at the end, with ``meta.complete`` false until every requested frame
is in. A rerun with the same method and settings keeps the frames already there and computes the rest, so an
interrupted run resumes; a rerun with different settings is refused rather than mixing two generators' boxes.
Frames are computed independently and deterministically, so the file is the same whatever the worker count
or interruption history.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from filelock import FileLock
from tqdm import tqdm

from shared.errors import ConfigError, DataError
from shared.flow_image import encode_flow_image
from shared.imageio import read_depth_m, read_rgb
from shared.manifest import FrameRecord, Manifest, read_manifest
from student_trainer.proposals.files import ProposalFileError, read_proposal_file, save_proposals
from student_trainer.proposals.methods import METHODS, candidates, combine
from student_trainer.proposals.sources import ProposalInputs, check_opencv_contrib
from xmodal_data.flow import compute_flow

__all__ = ["CACHE_FORMAT", "GENERATOR_VERSION", "default_cache_path", "frame_inputs", "generate_proposals"]

log = logging.getLogger(__name__)

CACHE_FORMAT = "xmodal-proposals"
GENERATOR_VERSION = 1
"""Bump when the same settings would give different boxes, so stale caches are not resumed."""

_MAX_CHUNK = 8  # frames per task sent to a worker
_MIN_PARALLEL = 2 * _MAX_CHUNK  # fewer frames than this are not worth starting processes for


@dataclass(frozen=True)
class _Job:
    frame_id: str
    rgb: str
    hha: str | None
    depth: str | None
    flow: str | None
    rgb_next: str | None


def _job(manifest: Manifest, f: FrameRecord) -> _Job:
    def path(p: str | None) -> str | None:
        return None if p is None else str(manifest.path(p))

    return _Job(f.id, str(manifest.path(f.rgb)), path(f.hha), path(f.depth), path(f.flow), path(f.rgb_next))


def _depth_image(depth_m: np.ndarray) -> np.ndarray:
    """Depth as a 3-channel uint8 image (disparity scaled to the frame's nearest point; 0 = missing)."""
    disparity = np.zeros_like(depth_m)
    valid = depth_m > 0
    disparity[valid] = 1.0 / depth_m[valid]
    top = disparity.max(initial=0.0)
    grey = np.zeros(depth_m.shape, np.uint8) if top <= 0 else np.rint(255 * disparity / top).astype(np.uint8)
    return np.dstack([grey] * 3)


def _same_size(job: _Job, rgb: np.ndarray, image: np.ndarray, path: str) -> np.ndarray:
    if image.shape[:2] != rgb.shape[:2]:
        raise DataError(f"frame {job.frame_id!r}: {path} is {image.shape[0]}x{image.shape[1]} (HxW) but its RGB "
                        f"{job.rgb} is {rgb.shape[0]}x{rgb.shape[1]}; paired images must align pixel for pixel")
    return image


def frame_inputs(manifest: Manifest, frame: FrameRecord) -> ProposalInputs:
    """Read a frame's RGB and paired-modality images (what the generator sees).

    The paired images are the HHA image (else the depth, as scaled disparity) and the flow image (else flow
    computed from ``rgb`` to ``rgb_next`` with OpenCV DIS, encoded as in :mod:`xmodal_data.flow`).

    Raises:
        ImageReadError: a missing or undecodable file (names it).
        DataError: a paired image of another size than the RGB (names the frame).
    """
    return _read_inputs(_job(manifest, frame))


def _read_inputs(job: _Job) -> ProposalInputs:
    """:func:`frame_inputs` of a job (plain paths, so it pickles to a worker process)."""
    rgb = read_rgb(job.rgb)
    paired = []
    if job.hha is not None:
        paired.append(_same_size(job, rgb, read_rgb(job.hha), job.hha))
    elif job.depth is not None:
        paired.append(_same_size(job, rgb, _depth_image(read_depth_m(job.depth)), job.depth))
    if job.flow is not None:
        paired.append(_same_size(job, rgb, read_rgb(job.flow), job.flow))
    elif job.rgb_next is not None:
        nxt = _same_size(job, rgb, read_rgb(job.rgb_next), job.rgb_next)
        paired.append(encode_flow_image(compute_flow(rgb, nxt)))
    return ProposalInputs(rgb, tuple(paired))


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one frame per process: nested threads only thrash the cores


def _run_chunk(jobs: list[_Job], method: str, max_boxes: int) -> list[tuple[str, list]]:
    """Worker task: each frame's source lists (torch-free; :func:`combine` runs in the parent)."""
    return [(j.frame_id, candidates(_read_inputs(j), method, max_boxes)) for j in jobs]


def default_cache_path(manifest_path: str | os.PathLike[str], method: str = "hybrid") -> Path:
    """``<manifest folder>/proposals_<method>.npz``."""
    return Path(manifest_path).resolve().parent / f"proposals_{method}.npz"


def _identity(method: str, max_per_frame: int) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "generator_version": GENERATOR_VERSION, "method": method,
            "max_per_frame": max_per_frame, "opencv": cv2.__version__}


def _resume(out: Path, identity: dict[str, Any]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], bool]:
    """Frames already in the cache at ``out`` (none if it does not exist), and whether it is marked complete."""
    if not out.exists():
        return {}, False
    try:
        frames, meta = read_proposal_file(out)
    except ProposalFileError as e:
        raise ConfigError(f"{out} exists but is not a readable proposal cache ({e}); delete it or choose another "
                          "output path") from None
    if meta.get("format") != CACHE_FORMAT:
        raise ConfigError(f"{out} exists and was not written by generate_proposals; refusing to overwrite it "
                          "(delete it or choose another output path)")
    changed = sorted(k for k in identity if meta.get(k) != identity[k])
    if changed:
        was = ", ".join(f"{k}={meta.get(k)!r}" for k in changed)
        now = ", ".join(f"{k}={identity[k]!r}" for k in changed)
        raise ConfigError(f"{out} holds proposals made with {was}, not {now}; delete it or choose another "
                          "output path")
    done = {fid: (b, s if s is not None else np.zeros(len(b), np.float32)) for fid, (b, s) in frames.items()}
    return done, bool(meta.get("complete"))


def _write(out: Path, manifest: Manifest, done: dict, identity: dict, complete: bool) -> float:
    """Save the cache (compressed once complete; stored while checkpointing); returns the seconds it took.

    Detectors started at the same time fill one cache for their own splits: under a lock, the frames another
    run saved since we read the file are merged into ``done`` first, so the cache ends as the union of every
    run's frames rather than the last writer's.
    """
    start = time.monotonic()
    with FileLock(f"{out}.lock"):
        if out.exists():
            for fid, pair in _resume(out, identity)[0].items():
                done.setdefault(fid, pair)
        order = [f.id for f in manifest if f.id in done]  # manifest order; frames no longer in it are dropped
        save_proposals(out, {i: done[i][0] for i in order}, {i: done[i][1] for i in order},
                       meta={**identity, "manifest": manifest.source, "complete": complete}, compress=complete)
    return time.monotonic() - start


class _Cache:
    """The cache being filled: the frames done so far, checkpointed to ``out`` as they come in.

    Checkpoints rewrite the whole file, so they are spaced at least ``checkpoint_s`` seconds apart and at least
    ten times the last rewrite's duration: writing stays under ~10 % of the time however large the file grows.
    """

    def __init__(self, out: Path, manifest: Manifest, identity: dict[str, Any], checkpoint_s: float) -> None:
        self.out, self.manifest, self.identity, self.checkpoint_s = out, manifest, identity, checkpoint_s
        self.done, self.complete = _resume(out, identity)
        self._last, self._interval = time.monotonic(), checkpoint_s

    def add(self, results: list[tuple[str, list]], max_per_frame: int) -> None:
        """Combine each frame's source lists into its proposals; checkpoint when one is due."""
        for fid, lists in results:
            self.done[fid] = combine(lists, max_per_frame)
        if time.monotonic() - self._last >= self._interval:
            self._interval = max(self.checkpoint_s, 10 * self.save(complete=False))
            self._last = time.monotonic()

    def save(self, complete: bool) -> float:
        """Write the cache (see :func:`_write`); returns the seconds it took."""
        return _write(self.out, self.manifest, self.done, self.identity, complete)


def _check_arguments(method: str, max_per_frame: int, workers: int | None) -> int:
    """Validate the arguments of :func:`generate_proposals`; returns the worker count (default: one per CPU)."""
    if method not in METHODS:
        raise ValueError(f"unknown proposal method {method!r}: expected one of {', '.join(map(repr, METHODS))}")
    if max_per_frame < 1:
        raise ValueError(f"max_per_frame must be >= 1, got {max_per_frame}")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def _select_frames(manifest: Manifest, splits: Sequence[str] | None) -> list[FrameRecord]:
    """The frames of ``splits`` (default: every labelled frame); refuses an empty selection."""
    records = manifest.split(*splits) if splits is not None else [f for f in manifest if f.labeled]
    if not records:
        what = f"splits {list(splits)}" if splits is not None else "labelled frames"
        raise ConfigError(f"{manifest.source}: no frames in {what} (it has {manifest.splits()})")
    return records


def _compute(todo: list[_Job], method: str, max_per_frame: int, workers: int,
             collect: Callable[[list[tuple[str, list]]], None]) -> None:
    """Compute the source lists of every job, in this process or in ``workers`` processes, handing each finished
    task's results to ``collect`` (in completion order); an error cancels the tasks not yet started."""
    if workers == 1 or len(todo) < _MIN_PARALLEL:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for job in todo:
                collect(_run_chunk([job], method, max_per_frame))
        finally:
            cv2.setNumThreads(threads)
        return
    size = max(1, min(_MAX_CHUNK, len(todo) // (4 * workers)))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    # spawn, not fork: the caller may hold threads (torch, OpenMP) that a fork would copy half-locked.
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = [pool.submit(_run_chunk, c, method, max_per_frame) for c in chunks]
        try:
            for future in as_completed(futures):
                collect(future.result())
        except BaseException:
            for future in futures:
                future.cancel()  # do not wait for frames nobody will keep
            raise


def generate_proposals(
    manifest_path: str | os.PathLike[str],
    out_npz: str | os.PathLike[str] | None = None,
    method: str = "hybrid",
    max_per_frame: int = 2000,
    splits: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    checkpoint_s: float = 60.0,
) -> Path:
    """Generate (or finish) proposals for the frames of a manifest and cache them in an ``.npz``.

    Args:
        manifest_path: the manifest (:mod:`shared.manifest`).
        out_npz: the cache; default :func:`default_cache_path`. Frames already in it are kept.
        method: a key of :data:`~student_trainer.proposals.methods.METHODS` (``"hybrid"`` by default).
        max_per_frame: keep the best this many proposals of each frame.
        splits: frames of these splits (labelled or not); default: every labelled frame (what detectors use).
        workers: processes (default: one per CPU); 1 computes in this process.
        progress: show a tqdm bar.
        checkpoint_s: rewrite the partial cache at most this often (seconds; less often when a rewrite is slow),
            so a crash loses little.

    Returns:
        The cache path, holding ``{frame id: boxes}`` (read with
        :func:`~student_trainer.proposals.files.load_proposals`) with scores and ``meta``.

    Raises:
        ValueError: unknown method, ``max_per_frame`` or ``workers`` < 1.
        ConfigError: the cache exists with other settings or is not ours; no frame selected.
        RuntimeError: OpenCV without contrib modules.
        ImageReadError / DataError: the first unreadable frame (names its file); the cache keeps what was done.
    """
    workers = _check_arguments(method, max_per_frame, workers)
    check_opencv_contrib()
    manifest = read_manifest(manifest_path)
    records = _select_frames(manifest, splits)
    out = Path(out_npz) if out_npz is not None else default_cache_path(manifest_path, method)
    cache = _Cache(out, manifest, _identity(method, max_per_frame), checkpoint_s)
    todo = [_job(manifest, f) for f in records if f.id not in cache.done]
    if not todo:
        if not cache.complete:
            cache.save(complete=True)
        return out
    log.info("proposals (%s) for %d frames into %s (%d already there)", method, len(todo), out, len(cache.done))

    with tqdm(total=len(records), initial=len(records) - len(todo), desc=f"proposals ({method})", unit="frame",
              disable=not progress) as bar:

        def collect(results: list[tuple[str, list]]) -> None:
            cache.add(results, max_per_frame)
            bar.update(len(results))

        try:
            _compute(todo, method, max_per_frame, workers, collect)
        except BaseException:
            if cache.done:
                cache.save(complete=False)  # keep the finished frames for a resume
            raise
    cache.save(complete=True)
    return out
