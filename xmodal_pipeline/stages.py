"""Pipeline stages shared by the demo and the recipes: timed stages, their times across reruns, "is it done" checks.

A stage is a name, a function that does its work (usually by starting child commands) and a predicate that says
whether its outputs are already complete. :class:`StageTimer` runs stages and keeps, per stage, the seconds of
the last run that did its work and, separately, those of the last run that found it already done, in one JSON
file (``timings.json``), so a rerun that skips everything does not replace the measured times with the time its
checks took. The predicates here read what the services write last (a store's done bits, a proposal cache's
``complete`` flag, a run's ``summary.json``), so a stage interrupted half way is never taken for done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from shared.atomic import write_json_atomic
from shared.errors import XModalError

__all__ = [
    "TIMINGS",
    "StageTimer",
    "link_finished_runs",
    "proposal_cache_complete",
    "read_timings",
    "stores_complete",
    "summaries_exist",
]

TIMINGS = "timings.json"


def read_timings(path: Path) -> dict[str, dict[str, float]]:
    """Per stage ``{"seconds": work, "skip_seconds": check when already done}`` from an earlier run, if any
    (a file of the older form ``{stage: seconds}`` reads as work times)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: dict(v) if isinstance(v, dict) else {"seconds": float(v)} for k, v in raw.items()}


class StageTimer:
    """Runs named stages and records their times in ``path`` (rewritten after each stage: an interrupted run
    keeps what it measured)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings = read_timings(path)

    def run(self, name: str, fn: Callable[[], None], finished: Callable[[], bool], skip_done: bool = False) -> None:
        """Run one stage; its time counts as the stage's work unless ``finished()`` held before it ran.

        Args:
            name: the stage's name in the log and in ``timings.json``.
            fn: does the stage's work; resumable (a rerun continues what an interrupted one left).
            finished: whether the stage's outputs are complete.
            skip_done: do not call ``fn`` when ``finished()`` holds (the recipes: their stages take hours and
                their predicates read what the children write last); False calls it anyway and lets the child
                commands check their own outputs (the demo).
        """
        t = time.perf_counter()
        done = finished()
        if done and skip_done:
            print(f"== {name} (already done: skipped)", flush=True)
        else:
            print(f"== {name}" + (" (already done: checking)" if done else ""), flush=True)
            fn()
        seconds = round(time.perf_counter() - t, 1)
        self.timings.setdefault(name, {})["skip_seconds" if done else "seconds"] = seconds
        write_json_atomic(self.path, self.timings)
        print(f"   {name}: {seconds:.1f} s" + (" (skipped)" if done else ""), flush=True)


def stores_complete(paths: Iterable[Path]) -> bool:
    """Every frame of every collection of each feature store is computed (False when one does not open)."""
    from teacher_server.store import FeatureStore

    try:
        stores = [FeatureStore.open(p) for p in paths]
    except (FileNotFoundError, XModalError):
        return False
    return all(c.done().all() for s in stores for c in s.collections.values())


def proposal_cache_complete(cache: Path, frame_ids: Iterable[str] = ()) -> bool:
    """The proposal cache ``student-trainer proposals`` writes exists, is marked complete and holds ``frame_ids``
    (several manifests can fill one cache: the complete flag alone says only that the last run finished)."""
    import numpy as np

    if not cache.is_file():
        return False
    try:
        with np.load(cache) as z:
            if "meta" not in z or not json.loads(str(z["meta"])).get("complete"):
                return False
            wanted = set(frame_ids)
            return not wanted or ("ids" in z and wanted <= set(z["ids"].tolist()))
    except (OSError, ValueError):
        return False


def summaries_exist(folders: Iterable[Path], name: str = "summary.json") -> bool:
    """Each run folder holds the file its command writes last (``summary.json``, ``compare.json``)."""
    return all((f / name).is_file() for f in folders)


def link_finished_runs(source: Path, dest: Path, names: Iterable[str]) -> list[str]:
    """Link ``source``'s finished runs (``summary.json`` present) called ``names`` into ``dest``, where none of that
    name exists yet: a later ``compare`` there reads them instead of training them again with the same settings.
    Returns the names linked."""
    dest.mkdir(parents=True, exist_ok=True)
    linked = []
    for name in names:
        if summaries_exist([source / name]) and not (dest / name).exists():
            (dest / name).symlink_to(os.path.relpath(source / name, dest))
            linked.append(name)
    return linked
