"""Run an importer's independent jobs (frames, videos) in worker processes, with a progress bar.

The first failure stops the run: jobs not started yet are cancelled, the running ones finish (each writes
its files under final names only when complete), and the error is raised in the caller, so the importer
writes no manifest. Errors of the ``tolerate`` types are instead returned in the job's place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import TypeVar

import cv2
from tqdm import tqdm

__all__ = ["default_workers", "run_jobs"]

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one job per process: OpenCV's own threads would only contend for the same cores


def run_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int | None = None,
    desc: str = "",
    unit: str = "job",
    progress: bool = True,
    tolerate: tuple[type[Exception], ...] = (),
) -> list[R | Exception]:
    """``[fn(job) for job in jobs]`` in ``workers`` processes (inline for one worker or one job).

    Args:
        fn: a picklable top-level function.
        jobs: picklable job descriptions.
        workers: processes; None = :func:`default_workers`.
        desc, unit, progress: the tqdm bar.
        tolerate: exception types returned in the job's place instead of stopping the run.

    Returns:
        One result (or tolerated exception) per job, in job order.

    Raises:
        The first job's exception that is not tolerated (other jobs are cancelled first).
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress)
    results: list[R | Exception] = []
    try:
        if workers == 1 or len(jobs) <= 1:
            _init_worker()
            for job in jobs:
                try:
                    results.append(fn(job))
                except tolerate as e:
                    results.append(e)
                bar.update()
            return results
        with ProcessPoolExecutor(min(workers, len(jobs)), initializer=_init_worker) as pool:
            futures: list[Future[R]] = [pool.submit(fn, job) for job in jobs]
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        error = future.exception()
                        if error is not None and not isinstance(error, tolerate):
                            raise error
                    bar.update(len(done))
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            return [f.exception() or f.result() for f in futures]  # type: ignore[misc]
    finally:
        bar.close()
