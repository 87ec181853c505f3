"""``xmodal-demo``: the whole system end to end on the built-in synthetic dataset.

Stages (each resumable; a rerun skips finished work):
1. render the paired dataset, encode HHA + flow, draw the contact sheet (``xmodal-data synth``);
   then the proposals of every labelled frame (``student-trainer proposals``), shared by all detectors;
2. train the RGB detector on ``rgb_train`` — its trunk is the "adapted" teacher (``student-trainer detect``);
   and an untrained copy of it (0 iterations) — the random-teacher control;
3. ``teacher-server precompute`` both teachers into two Zarr stores;
4. ``teacher-server serve`` each store as its own process; the HHA and flow students train at the same time
   against it (two processes), first against the trained teacher, then against the control;
5. ``student-trainer compare`` for HHA and for flow at the same time (detectors for every init, RGB alone,
   fusion);
6. the report: ``<out>/report/report.md`` with the comparison tables, plots and the contact sheet.
Ctrl-C stops every process the demo started.

Each profile has its own default folder (``runs/demo`` for quick, ``runs/demo-tiny``, ``runs/demo-full``): a
folder holds one profile's dataset. ``<out>/report/timings.json`` keeps, per stage, the seconds of the last run
that did its work and, separately, those of the last run that found it already done, so a rerun that skips
everything does not replace the measured times with the time its checks took.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import XModalError
from shared.modalities import names
from shared.settings import add_settings_arguments, settings_from_args
from student_trainer.train_settings import apply_profile
from xmodal_pipeline.procs import ChildProcesses
from xmodal_pipeline.stages import TIMINGS, StageTimer, proposal_cache_complete, stores_complete, summaries_exist

__all__ = ["DemoSettings", "main", "run_demo"]

# The demo trains a student of every modality that has transfer pairs (shared.modalities).
STUDENTS = tuple(names(students_only=True))

_SEEDS = {"tiny": [0], "quick": [0], "full": [0, 1, 2]}
# Labelled RGB is the plentiful modality: on the CPU profile the teacher gets 3x the detectors' 500 iterations
# (detector steps are cheap there), since a weak teacher has little to transfer.
_TEACHER_ITERATIONS = {"quick": ["--iterations", "1500"]}


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_DEMO_", extra="ignore")
    # One folder per profile: a folder holds one profile's dataset (synth refuses to mix them).
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"out": "runs/demo-tiny"}, "quick": {"out": "runs/demo"}, "full": {"out": "runs/demo-full"},
    }

    profile: Literal["tiny", "quick", "full"] = Field("quick", description="dataset and training size profile")
    out: Path = Field(Path("runs/demo"), description="folder for data, stores, runs and the report")
    seed: int = Field(0, description="seed of the dataset")
    device: str = Field("auto", description="device of every training process ('auto': CUDA when present)")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        return apply_profile(data, cls.PROFILES)


class Demo:
    """The pipeline's paths and steps; each step skips itself when its output exists."""

    def __init__(self, s: DemoSettings, procs: ChildProcesses) -> None:
        self.s, self.p = s, procs
        self.data = s.out / "data" / "synth"
        self.manifest = self.data / "manifest.jsonl"
        self.runs = s.out / "runs"
        self.report = s.out / "report"
        self.stages = StageTimer(self.report / TIMINGS)
        self.common = ["--profile", s.profile, "--no-progress"]

    def dataset(self) -> None:
        self.p.run("data", "xmodal_data.cli", ["synth", "--profile", self.s.profile, "--out", self.data,
                                          "--seed", self.s.seed, "--no-progress"])

    def proposals(self) -> None:
        self.p.run("proposals", "student_trainer.cli", ["proposals", "--manifest", self.manifest, *self.common])

    def _parallel(self, jobs: list[tuple[str, list]]) -> None:
        """Start the ``student_trainer.cli`` jobs at once (one intra-op thread each on CPU) and wait for all."""
        env = {"OMP_NUM_THREADS": "1"} if len(jobs) > 1 else None
        self.p.wait(*(self.p.start(name, "student_trainer.cli", args, env=env) for name, args in jobs))

    def rgb_teachers(self) -> None:
        teacher = _TEACHER_ITERATIONS.get(self.s.profile, [])
        for name, extra in (("rgb", teacher), ("rgb-untrained", ["--iterations", "0"])):
            if not (self.runs / name / "summary.json").is_file():
                self.p.run(name, "student_trainer.cli", ["detect", "--modality", "rgb", "--init", "random",
                                                         "--manifest", self.manifest, "--out", self.runs / name,
                                                         "--device", self.s.device, "--resume", *extra,
                                                         *self.common])

    def stores(self) -> None:
        for store, run in (("store", "rgb"), ("store-untrained", "rgb-untrained")):
            self.p.run(f"precompute-{store}", "teacher_server.cli", [
                "precompute", "--store", self.s.out / store, "--manifests", self.manifest, "--arch", "checkpoint",
                "--weights", self.runs / run / "checkpoint.pt", "--device", self.s.device, "--no-progress"])

    def students(self) -> None:
        for store, prefix in (("store", "transfer"), ("store-untrained", "control")):
            todo = [m for m in STUDENTS if not (self.runs / f"{prefix}-{m}" / "summary.json").is_file()]
            if not todo:
                continue
            with self.p.serving(f"serve-{store}", [self.s.out / store]) as url:
                self._parallel([(f"{prefix}-{m}", [
                    "transfer", "--modality", m, "--teacher-url", url, "--manifest", self.manifest,
                    "--out", self.runs / f"{prefix}-{m}", "--device", self.s.device, "--resume", *self.common])
                    for m in todo])

    def compare(self) -> None:
        seeds = [str(x) for x in _SEEDS[self.s.profile]]
        self._parallel([(f"compare-{m}", [
            "compare", "--modality", m, "--manifest", self.manifest, "--out", self.runs / f"compare-{m}",
            "--rgb-run", self.runs / "rgb", "--transfer", self.runs / f"transfer-{m}" / "checkpoint.pt",
            "--control", self.runs / f"control-{m}" / "checkpoint.pt", "--seeds", *seeds,
            "--device", self.s.device, *self.common]) for m in STUDENTS])

    def write_report(self) -> Path:
        from xmodal_pipeline.report import write_demo_report

        return write_demo_report(self.s.out, self.runs, self.data, self.report, self.stages.timings,
                                 self.s.profile)

    # -- what each stage leaves when it is complete (checked before it runs, for the timings) --------------
    def _summaries(self, *names: str) -> bool:
        return summaries_exist(self.runs / n for n in names)

    def _proposals_done(self) -> bool:
        from student_trainer.detect_settings import DETECT_PROFILES
        from student_trainer.proposals import default_cache_path

        return proposal_cache_complete(default_cache_path(self.manifest,
                                                          DETECT_PROFILES[self.s.profile]["proposal_method"]))

    def _stores_done(self) -> bool:
        return stores_complete(self.s.out / name for name in ("store", "store-untrained"))

    def run(self) -> Path:
        stages = (
            ("dataset", self.dataset, lambda: (self.data / "contact_sheet.png").is_file()),
            ("proposals", self.proposals, self._proposals_done),
            ("rgb teacher", self.rgb_teachers, lambda: self._summaries("rgb", "rgb-untrained")),
            ("precompute", self.stores, self._stores_done),
            ("students", self.students,
             lambda: self._summaries(*(f"{p}-{m}" for p in ("transfer", "control") for m in STUDENTS))),
            ("compare", self.compare,
             lambda: summaries_exist((self.runs / f"compare-{m}" for m in STUDENTS), "compare.json")),
        )
        for name, fn, finished in stages:
            self.stages.run(name, fn, finished)
        return self.write_report()


def run_demo(s: DemoSettings) -> Path:
    """Run every stage; returns the report path."""
    t0 = time.perf_counter()
    with ChildProcesses(s.out / "logs") as procs:
        demo = Demo(s, procs)
        report = demo.run()
    total = time.perf_counter() - t0
    print(f"report: {report} (total {total / 60:.1f} min; logs in {s.out / 'logs'})")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmodal-demo",
        description="End-to-end demo of cross-modal supervision transfer on the built-in synthetic dataset: "
        "data, RGB teacher, feature cache, HHA and flow students in parallel, detectors, comparison report. "
        "Resumable: rerun the same command to continue after an interruption.",
    )
    add_settings_arguments(parser, DemoSettings)
    args = parser.parse_args(argv)
    try:
        report = run_demo(settings_from_args(DemoSettings, args))
    except XModalError as e:
        print(f"xmodal-demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xmodal-demo: interrupted; every process it started was stopped. Rerun to resume.", file=sys.stderr)
        return 130
    print(report.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
