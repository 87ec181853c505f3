"""``xmodal-demo``: the whole system end to end on the built-in synthetic dataset, in the paper's shape.

Stages (each resumable; a rerun skips finished work):
1. ``dataset``: render the paired dataset, encode HHA + flow images (``--flow-method``), draw the contact sheet
   (``xmodal-data synth``); with ``--flow-ceiling`` also flow images made from the renderer's exact flow (a
   second manifest, the ceiling row);
2. ``pretraining``: separate labelled RGB renders with a broader label space (``xmodal-data synth --profile
   pretrain-*``: 36 shape x look classes) and the ImageNet-like teacher trained to classify their object crops
   (``student-trainer classify``) — the paper's ImageNet teacher; only when a teacher or the RGB init needs it;
3. ``proposals`` of every labelled frame (``student-trainer proposals``), shared by all detectors;
4. ``rgb teacher``: the RGB detector on ``rgb_train`` (``student-trainer detect``, started from the ImageNet-like
   teacher with ``--rgb-init imagenet``) — its trunk is the "adapted" teacher —, and an untrained copy of it (0
   iterations): the random-teacher control;
5. ``precompute``: ``teacher-server precompute`` of every teacher into its own Zarr store;
6. ``students``: per teacher, ``teacher-server serve`` of its store as a process and the students of every variant
   (HHA, flow, flow on exact flow) against it at the same time;
7. ``compare``: ``student-trainer compare`` per variant and teacher (detectors for every init, RGB alone, fusion);
   the rows that do not depend on the teacher are trained once and linked into the other teachers' comparisons;
8. the report: ``<out>/report/report.md`` with one merged table per variant, the goals of the benchmark checked on
   it, plots, the contact sheet and the stage times.
Ctrl-C stops every process the demo started.

Profiles (every value is also a flag): ``tiny`` (a smoke run of every stage), ``quick`` (``make demo``: the
20-minute CPU demo, 3 detector seeds), ``paper`` (the full protocol: 3 seeds, both teachers, the exact-flow
ceiling; 90 minutes on 2 CPU cores), ``full`` (240x320 frames and the paper's schedules, for a GPU). Each profile
has its own default folder (``runs/demo`` for quick, ``runs/demo-<profile>`` otherwise): a folder holds one
profile's dataset.
``<out>/report/timings.json`` keeps, per stage, the seconds of the last run that did its work and, separately,
those of the last run that found it already done.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import XModalError
from shared.settings import IntList, add_settings_arguments, settings_from_args
from student_trainer.train_settings import apply_profile
from xmodal_data.importers.stamp import check_stamp
from xmodal_pipeline.procs import ChildProcesses
from xmodal_pipeline.stages import (
    TIMINGS,
    StageTimer,
    link_finished_runs,
    proposal_cache_complete,
    stores_complete,
    summaries_exist,
)

__all__ = ["DemoSettings", "Teacher", "Variant", "main", "run_demo"]

DemoProfile = Literal["tiny", "quick", "paper", "full"]
TeacherName = Literal["adapted", "imagenet"]
CHILD_PROFILE: dict[str, str] = {"tiny": "tiny", "quick": "quick", "paper": "quick", "full": "full"}
"""The size profile the demo's profile gives every child command (``paper`` is the quick sizes, longer)."""
SYNTH_PROFILE: dict[str, str] = {"tiny": "tiny", "quick": "quick", "paper": "paper", "full": "full"}
PRETRAIN_PROFILE: dict[str, str] = {"tiny": "pretrain-tiny", "quick": "pretrain-quick", "paper": "pretrain-quick",
                                    "full": "pretrain-full"}


@dataclass(frozen=True)
class Teacher:
    """A teacher of the demo: its store, the prefix of its students' run folders, the checkpoint it precomputes
    from (relative to the runs folder) and its label in the tables."""

    name: str
    store: str
    prefix: str
    checkpoint: str
    label: str


TEACHERS: dict[str, Teacher] = {
    "adapted": Teacher("adapted", "store", "transfer", "rgb/checkpoint.pt", "adapted (the RGB detector)"),
    "imagenet": Teacher("imagenet", "store-imagenet", "imagenet", "imagenet/checkpoint.pt",
                        "ImageNet-like (crop classifier)"),
    "untrained": Teacher("untrained", "store-untrained", "control", "rgb-untrained/checkpoint.pt",
                         "untrained (control)"),
}


@dataclass(frozen=True)
class Variant:
    """One student / comparison of the demo: its name in run folders, the student modality, the manifest."""

    name: str
    modality: str
    manifest: Path
    title: str


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_DEMO_", extra="ignore")
    # One folder per profile: a folder holds one profile's dataset (synth refuses to mix them). What each profile
    # chose and why: BENCHMARKS.md, "The benchmark's shape".
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"out": "runs/demo-tiny", "seeds": [0], "teachers": ["adapted", "imagenet"], "rgb_init": "imagenet",
                 "transfer_iterations": 40, "flow_method": "dis-fine", "flow_ceiling": True, "amp": False,
                 "trunk_lr_mult": 0.1, "detector_iterations": 40},
        "quick": {"out": "runs/demo", "seeds": [0, 1, 2], "teachers": ["adapted"], "rgb_init": "imagenet",
                  "transfer_iterations": 1600, "flow_method": "dis-fine", "flow_ceiling": False, "amp": True,
                  "trunk_lr_mult": 0.1},
        "paper": {"out": "runs/demo-paper", "seeds": [0, 1, 2], "teachers": ["adapted", "imagenet"],
                  "rgb_init": "imagenet", "transfer_iterations": 3200, "flow_method": "dis-fine",
                  "flow_ceiling": True, "amp": True, "trunk_lr_mult": 0.1, "detector_iterations": 1000},
        "full": {"out": "runs/demo-full", "seeds": [0, 1, 2], "teachers": ["adapted", "imagenet"],
                 "rgb_init": "imagenet", "transfer_iterations": 20000, "flow_method": "dis-fine",
                 "flow_ceiling": True, "amp": None},
    }

    profile: DemoProfile = Field("quick", description="dataset and training size profile")
    out: Path = Field(Path("runs/demo"), description="folder for data, stores, runs and the report")
    seed: int = Field(0, description="seed of the dataset")
    seeds: IntList = Field([0], description="detector seeds of the comparisons (mean and spread over them)")
    teachers: list[TeacherName] = Field(
        ["adapted"], description="teachers the students learn from, besides the untrained control: adapted (the "
        "RGB detector's trunk) and/or imagenet (the ImageNet-like crop classifier); the first one's comparison "
        "holds the control rows")
    rgb_init: Literal["imagenet", "random"] = Field(
        "imagenet", description="where the RGB detector (the adapted teacher, RGB alone) starts: the ImageNet-like "
        "teacher, as the paper's started from ImageNet, or a random trunk")
    transfer_iterations: int = Field(1600, ge=1, description="steps of every student")
    flow_method: Literal["dis", "dis-fine"] = Field(
        "dis-fine", description="flow estimator of the flow images (dis-fine: DIS down to full resolution; the "
        "96x128 frames' objects blur into the background at DIS medium's coarser scale)")
    flow_ceiling: bool = Field(False, description="also the flow rows on images of the renderer's exact flow (the "
                               "ceiling of any estimator)")
    amp: bool | None = Field(None, description="mixed precision in every student, teacher and detector (bfloat16 on "
                             "CPU, float16 on CUDA; unset: CUDA only)")
    trunk_lr_mult: float = Field(
        1.0, ge=0, description="the comparisons' fine-tuned detectors: the trunk learns at the detector's lr x this, "
        "for every init (quick / paper: 0.1; at 1 the CPU schedule's lr 0.03 washes out what an init carries: "
        "BENCHMARKS.md, \"Fine-tuning washout\")")
    detector_iterations: int | None = Field(
        None, ge=1, description="steps of the comparisons' detectors (default: the detector profile's, 500 on the "
        "CPU profiles; paper: 1000, where the random-trunk baselines stop being undertrained: BENCHMARKS.md, "
        "\"Detector schedule\")")
    device: str = Field("auto", description="device of every training process ('auto': CUDA when present)")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        return apply_profile(data, cls.PROFILES)

    def stamp(self) -> dict[str, Any]:
        """The settings that shape the outputs: a rerun into the same ``--out`` must give the same ones (teachers
        and seeds may grow, the device may change), as the recipes' ``import.json``."""
        return self.model_dump(mode="json", exclude={"out", "teachers", "seeds", "device"})

    @property
    def uses_pretraining(self) -> bool:
        return self.rgb_init == "imagenet" or "imagenet" in self.teachers


class Demo:
    """The pipeline's paths and steps; each step skips itself when its output exists."""

    def __init__(self, s: DemoSettings, procs: ChildProcesses) -> None:
        self.s, self.p = s, procs
        self.data = s.out / "data" / "synth"
        self.pretrain = s.out / "data" / "pretrain"
        self.manifest = self.data / "manifest.jsonl"
        self.runs = s.out / "runs"
        self.report = s.out / "report"
        self.stages = StageTimer(self.report / TIMINGS)
        self.child = CHILD_PROFILE[s.profile]
        self.common = ["--profile", self.child, "--no-progress"]
        self.amp = [] if s.amp is None else ["--amp" if s.amp else "--no-amp"]
        self.teachers = [TEACHERS[t] for t in s.teachers]

    # -- what the demo trains and compares -------------------------------------------------------------------
    @property
    def variants(self) -> list[Variant]:
        out = [Variant("hha", "hha", self.manifest, "HHA"),
               Variant("flow", "flow", self.manifest, f"flow ({self.s.flow_method} flow images)")]
        if self.s.flow_ceiling:
            out.append(Variant("flow-gt", "flow", self.data / "manifest_gtflow.jsonl",
                               "flow on exact flow images (the ceiling)"))
        return out

    def student(self, teacher: Teacher, variant: Variant) -> Path:
        return self.runs / f"{teacher.prefix}-{variant.name}"

    def compare_run(self, teacher: Teacher, variant: Variant) -> Path:
        first = teacher is self.teachers[0]
        return self.runs / (f"compare-{variant.name}" if first else f"compare-{variant.name}-{teacher.name}")

    # -- stages ----------------------------------------------------------------------------------------------
    def dataset(self) -> None:
        self.p.run("data", "xmodal_data.cli", ["synth", "--profile", SYNTH_PROFILE[self.s.profile], "--out", self.data,
                                               "--seed", self.s.seed, "--flow-method", self.s.flow_method,
                                               "--no-progress"])
        if self.s.flow_ceiling:
            from xmodal_data.encode import flow_image_manifest

            flow_image_manifest(self.manifest, "gt", progress=False)

    def _dataset_done(self) -> bool:
        return (self.data / "contact_sheet.png").is_file() and all(v.manifest.is_file() for v in self.variants)

    def pretraining(self) -> None:
        manifest = self.pretrain / "manifest.jsonl"
        if not manifest.is_file():
            self.p.run("pretrain-data", "xmodal_data.cli", [
                "synth", "--profile", PRETRAIN_PROFILE[self.s.profile], "--out", self.pretrain, "--seed", self.s.seed,
                "--no-encode", "--no-progress"])
        if not summaries_exist([self.runs / "imagenet"]):
            self.p.run("imagenet", "student_trainer.cli", [
                "classify", "--manifest", manifest, "--out", self.runs / "imagenet", "--device", self.s.device,
                "--resume", *self.amp, *self.common])

    def proposals(self) -> None:
        self.p.run("proposals", "student_trainer.cli", ["proposals", "--manifest", self.manifest, *self.common])

    def _parallel(self, jobs: list[tuple[str, list]], env: dict[str, str] | None = None) -> None:
        """Start the ``student_trainer.cli`` jobs at once (one intra-op thread each on CPU) and wait for all."""
        env = {**(env or {}), **({"OMP_NUM_THREADS": "1"} if len(jobs) > 1 else {})}
        self.p.wait(*(self.p.start(name, "student_trainer.cli", args, env=env or None) for name, args in jobs))

    def rgb_teachers(self) -> None:
        init = (["--init", "copy-rgb", "--trunk-checkpoint", self.runs / "imagenet" / "checkpoint.pt"]
                if self.s.rgb_init == "imagenet" else ["--init", "random"])
        # Labelled RGB is the plentiful modality: the teacher gets 3x the quick detector profile's 500 steps on the
        # CPU profiles (detector steps are cheap there), since a weak teacher has little to transfer.
        longer = ["--iterations", "1500"] if self.child == "quick" else []
        for name, extra in (("rgb", [*init, *longer]), ("rgb-untrained", ["--init", "random", "--iterations", "0"])):
            if not summaries_exist([self.runs / name]):
                self.p.run(name, "student_trainer.cli", ["detect", "--modality", "rgb", "--manifest", self.manifest,
                                                         "--out", self.runs / name, "--device", self.s.device,
                                                         "--resume", *extra, *self.amp, *self.common])

    def _all_teachers(self) -> list[Teacher]:
        return [*self.teachers, TEACHERS["untrained"]]

    def precompute(self) -> None:
        for t in self._all_teachers():
            self.p.run(f"precompute-{t.store}", "teacher_server.cli", [
                "precompute", "--store", self.s.out / t.store, "--manifests", self.manifest, "--arch", "checkpoint",
                "--weights", self.runs / t.checkpoint, "--device", self.s.device, "--no-progress"])

    def students(self) -> None:
        for t in self._all_teachers():
            todo = [v for v in self.variants if not summaries_exist([self.student(t, v)])]
            if not todo:
                continue
            with self.p.serving(f"serve-{t.store}", [self.s.out / t.store]) as url:
                self._parallel([(self.student(t, v).name, [
                    "transfer", "--modality", v.modality, "--teacher-url", url, "--manifest", v.manifest,
                    "--out", self.student(t, v), "--iterations", self.s.transfer_iterations,
                    "--eval-splits", "depth_test" if v.modality == "hha" else "flow_test", "--device", self.s.device,
                    "--resume", *self.amp, *self.common]) for v in todo])

    def compare(self) -> None:
        """Per teacher (in order), the comparisons of every variant in parallel; the later teachers' comparisons
        link the first one's runs that no student enters (no init, RGB alone)."""
        from shared.settings import env_name
        from student_trainer.detect_settings import DetectSettings

        env = {} if self.s.amp is None else {env_name(DetectSettings, "amp"): str(self.s.amp).lower()}
        seeds = [str(x) for x in self.s.seeds]
        for t in self.teachers:
            jobs = []
            for v in self.variants:
                out = self.compare_run(t, v)
                if t is not self.teachers[0]:
                    first = self.compare_run(self.teachers[0], v)
                    link_finished_runs(first, out, ["rgb", *(f"no-init{f}-seed{x}" for f in ("", "-frozen")
                                                             for x in seeds)])
                control = (["--control", self.student(TEACHERS["untrained"], v) / "checkpoint.pt"]
                           if t is self.teachers[0] else [])
                jobs.append((out.name, [
                    "compare", "--modality", v.modality, "--manifest", v.manifest, "--out", out,
                    "--rgb-run", self.runs / "rgb", "--copy-rgb", self.runs / t.checkpoint,
                    "--transfer", self.student(t, v) / "checkpoint.pt", *control, "--seeds", *seeds,
                    "--trunk-lr-mult", self.s.trunk_lr_mult,
                    *(["--iterations", self.s.detector_iterations] if self.s.detector_iterations else []),
                    "--device", self.s.device, *self.common]))
            self._parallel(jobs, env)

    def write_report(self) -> Path:
        from xmodal_pipeline.report import write_demo_report

        return write_demo_report(self)

    # -- what each stage leaves when it is complete (checked before it runs, for the timings) --------------
    def _proposals_done(self) -> bool:
        from student_trainer.detect_settings import DETECT_PROFILES
        from student_trainer.proposals import default_cache_path

        return proposal_cache_complete(default_cache_path(self.manifest,
                                                          DETECT_PROFILES[self.child]["proposal_method"]))

    def _stores_done(self) -> bool:
        return stores_complete(self.s.out / t.store for t in self._all_teachers())

    def _students_done(self) -> bool:
        return summaries_exist(self.student(t, v) for t in self._all_teachers() for v in self.variants)

    def _compare_done(self) -> bool:
        return summaries_exist((self.compare_run(t, v) for t in self.teachers for v in self.variants), "compare.json")

    def check_folder(self) -> None:
        """Record the settings in ``<out>/import.json``, or refuse a rerun with others: every finished stage a
        rerun reuses must stand for the settings the report names."""
        check_stamp(self.s.out, "xmodal-demo", self.s.stamp())

    def run(self) -> Path:
        self.check_folder()
        stages = [
            ("dataset", self.dataset, self._dataset_done),
            *([("pretraining", self.pretraining, lambda: summaries_exist([self.runs / "imagenet"]))]
              if self.s.uses_pretraining else []),
            ("proposals", self.proposals, self._proposals_done),
            ("rgb teacher", self.rgb_teachers,
             lambda: summaries_exist([self.runs / "rgb", self.runs / "rgb-untrained"])),
            ("precompute", self.precompute, self._stores_done),
            ("students", self.students, self._students_done),
            ("compare", self.compare, self._compare_done),
        ]
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
        "data, an ImageNet-like and an adapted RGB teacher, feature caches, HHA and flow students in parallel, "
        "detectors, comparison report. Resumable: rerun the same command to continue after an interruption.",
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
