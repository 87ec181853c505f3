"""Run logs: metrics as JSON lines (appended, flushed per line) and the run's config dump."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from shared.atomic import write_json_atomic, write_text_atomic
from shared.errors import ConfigError
from student_trainer.train_settings import TrainSettings

__all__ = ["MetricWindow", "MetricsLog", "check_same_run", "read_metrics", "write_run_config"]


class MetricWindow:
    """Averages of per-step values over the steps since the last report, plus throughput and waiting share."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._n, self._wait, self._time = 0, 0.0, 0.0

    def add(self, values: dict[str, float], wait_s: float, step_s: float) -> None:
        """Record one step: its metrics, the seconds spent waiting for data, and the whole step's seconds."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1
        self._wait += wait_s
        self._time += step_s

    def report(self, **extra: Any) -> dict[str, Any]:
        """The averaged record (``extra`` first, e.g. step and lr) and a fresh window."""
        record = {**extra, **{k: v / self._n for k, v in self._sums.items()},
                  "steps_per_s": self._n / self._time, "wait_fraction": self._wait / self._time}
        self._reset()
        return record


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the resumed step are dropped first."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and path.is_file():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0)
                    <= resume_step]
            write_text_atomic(path, "".join(ln + "\n" for ln in kept))  # a kill here keeps the old lines
        elif resume_step is None and path.exists():
            path.unlink()
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file."""
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def write_run_config(out: Path, config: dict[str, Any]) -> Path:
    """Dump the settings and the command line into the run folder (for reproduction)."""
    return write_json_atomic(out / "config.json", {"argv": sys.argv, "pid": os.getpid(), **config}, default=str)


def check_same_run(s: TrainSettings, what: str, resume: bool = False) -> None:
    """Refuse to go on with the run in ``s.out`` (one with a checkpoint or a summary) when ``s`` differs from the
    settings its ``config.json`` records: a finished run is reused as it is, so a changed setting (say
    ``iterations``) would otherwise be ignored without a word. The settings' ``rerun_may_change()`` fields (where
    and how a run reports), fields the file predates, and with ``resume`` (an explicit ``--resume``, which may train
    a run on for longer) ``iterations`` may differ; paths compare as resolved paths."""
    config = s.out / "config.json"
    if not config.is_file() or not any((s.out / n).is_file() for n in ("summary.json", "checkpoint.pt")):
        return
    may_change = s.rerun_may_change() | ({"iterations"} if resume else set())
    before = json.loads(config.read_text())["settings"]
    now = json.loads(s.model_dump_json())

    def same(key: str, a: Any, b: Any) -> bool:
        paths = isinstance(a, str) and isinstance(b, str) and isinstance(getattr(s, key), Path)
        return Path(a).resolve() == Path(b).resolve() if paths else a == b

    changed = [k for k, v in now.items() if k not in may_change and k in before and not same(k, before[k], v)]
    if changed:
        raise ConfigError(f"{s.out} holds {what} made with " + ", ".join(f"{k}={before[k]!r}" for k in changed)
                          + "; this run asks for " + ", ".join(f"{k}={now[k]!r}" for k in changed)
                          + ": give it another --out, or delete that folder to run it again")
