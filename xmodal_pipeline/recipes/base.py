"""What both recipes do the same way, after their own imports: teachers -> feature stores -> students -> detectors.

Stages, in order (each skipped when its outputs are complete, so a rerun of the same command resumes):

1. ``weights``: torchvision's AlexNet written as an RGB trunk checkpoint (the RGB detector starts from it) and
   every teacher loaded once, so missing ImageNet weights fail before hours of import (offline: the message names
   the file to place);
2. the recipe's data stages (imports, proposals);
3. ``precompute``: ``teacher-server precompute`` of every teacher over the transfer pairs' RGB frames, one store
   per teacher;
4. ``students``: per teacher, ``teacher-server serve`` of its store as a process and ``student-trainer transfer``
   of an AlexNet student of the new modality against it (conv1 padding searched to match the teacher's map);
5. ``detectors <evaluation>``: per evaluation (NYUD2 val and test, JHMDB splits) the RGB detector from ImageNet
   AlexNet (``detect --init copy-rgb``), then ``student-trainer compare`` per teacher (no init, copy from RGB,
   supervision transfer, each also trunk-frozen; RGB alone; late fusion). The rows that do not depend on the
   teacher are trained once: the second teacher's comparison links the first one's finished runs.

Every detector of an evaluation trains on the same splits with the same schedule: ``compare`` has no split
flags, so they travel as the ``STUDENT_DETECT_*`` environment variables that every detector it builds reads.
"""

from __future__ import annotations

import abc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from shared.settings import env_name
from xmodal_pipeline.procs import ChildProcesses
from xmodal_pipeline.recipes.settings import CHILD_PROFILE, RecipeSettings
from xmodal_pipeline.stages import TIMINGS, StageTimer, link_finished_runs, stores_complete, summaries_exist

__all__ = ["TEACHER_LABELS", "Evaluation", "RecipeRun", "Stage", "run_recipe"]

TEACHER_LABELS = {"alexnet": "AlexNet", "vgg16": "VGG16"}

Stage = tuple[str, Callable[[], None], Callable[[], bool]]
"""A stage: its name, the function doing its work, whether its outputs are complete."""


@dataclass(frozen=True)
class Evaluation:
    """One detection benchmark a recipe reports: detectors train on ``train_splits`` of ``manifest`` and are
    scored on ``test_split``, with the proposals in ``proposals`` (None: the generator's cache beside the
    manifest, filled by the recipe's proposals stage)."""

    name: str
    manifest: Path
    train_splits: tuple[str, ...]
    test_split: str
    proposals: Path | None = None


class RecipeRun(abc.ABC):
    """The folders of one recipe run and its shared stages; a recipe adds its data stages and evaluations.

    Layout under ``--out``: ``data/`` (imports), ``teachers/`` (the RGB trunk checkpoint), ``stores/<teacher>``,
    ``runs/students/<modality>-<teacher>``, ``runs/<evaluation>/{rgb, compare-<teacher>}``, ``logs/`` (one log
    per child process), ``report/`` (``report.md``, ``results.json``, ``timings.json``, plots), ``import.json``
    (the settings stamp: a rerun with other settings refuses to mix its outputs in).
    """

    recipe: ClassVar[str]
    modality: ClassVar[str]

    def __init__(self, s: RecipeSettings, procs: ChildProcesses) -> None:
        self.s, self.p = s, procs
        self.data = s.out / "data"
        self.stores = s.out / "stores"
        self.runs = s.out / "runs"
        self.report_dir = s.out / "report"
        self.rgb_init = s.out / "teachers" / f"alexnet-{s.weights}.pt"
        self.profile = CHILD_PROFILE[s.profile]
        self.timer = StageTimer(self.report_dir / TIMINGS)

    # -- given by each recipe ------------------------------------------------------------------------------
    transfer_splits: ClassVar[tuple[str, ...] | None] = None
    """The splits of the transfer manifest the students learn from (None: the trainer's default)."""

    @property
    @abc.abstractmethod
    def transfer_manifest(self) -> Path:
        """The manifest of the unlabelled RGB / new-modality pairs the students learn from."""

    @abc.abstractmethod
    def data_stages(self) -> list[Stage]:
        """The imports (and proposals) that come before the teachers."""

    @abc.abstractmethod
    def evaluations(self) -> list[Evaluation]:
        """The detection benchmarks, in report order."""

    title: ClassVar[str]
    mean_over_evaluations: ClassVar[bool] = False
    """Whether the report adds the mean over the evaluations (JHMDB's splits)."""

    @abc.abstractmethod
    def report_manifests(self) -> list[Path]:
        """The manifests whose frames per split the report lists."""

    @abc.abstractmethod
    def notes(self) -> list[str]:
        """Markdown after the tables: what the rows are, where they differ from the paper."""

    # -- paths ---------------------------------------------------------------------------------------------
    def store(self, teacher: str) -> Path:
        return self.stores / teacher

    def student(self, teacher: str) -> Path:
        return self.runs / "students" / f"{self.modality}-{teacher}"

    def rgb_run(self, ev: Evaluation) -> Path:
        return self.runs / ev.name / "rgb"

    def compare_run(self, ev: Evaluation, teacher: str) -> Path:
        return self.runs / ev.name / f"compare-{teacher}"

    def _common(self) -> list[object]:
        return ["--profile", self.profile, "--device", self.s.device, "--no-progress"]

    def _workers(self) -> list[object]:
        return ["--workers", self.s.workers] if self.s.workers else []

    @property
    def loader_workers(self) -> int:
        """``--loader-workers``, else every core but two (the trainer's main process and the teacher server)."""
        return self.s.loader_workers if self.s.loader_workers is not None else max(1, (os.cpu_count() or 2) - 2)

    # -- stage 1: weights ------------------------------------------------------------------------------------
    def weights(self) -> None:
        from xmodal_pipeline.recipes.imagenet import check_teacher_weights, write_alexnet_checkpoint

        if not self.rgb_init.is_file():
            write_alexnet_checkpoint(self.rgb_init, self.s.weights, self.s.weights_seed)
        if self.s.weights == "imagenet":  # random weights need no file; AlexNet was loaded just above
            check_teacher_weights([t for t in self.s.teachers if t != "alexnet"], self.s.weights)

    def _weights_done(self) -> bool:  # nothing loads the teachers again once every store is complete
        return self.rgb_init.is_file() and self._stores_done()

    # -- stage 3: precompute ---------------------------------------------------------------------------------
    def transfer_size(self) -> tuple[int, int]:
        """``--transfer-input-size``, else the transfer frames' most common size, moved where needed to the
        nearest one at which the AlexNet student can match every teacher (:mod:`.geometry`)."""
        from shared.manifest import read_manifest
        from xmodal_pipeline.recipes.geometry import common_frame_size, transfer_input_size

        if self.s.transfer_input_size:
            return self.s.transfer_input_size[0], self.s.transfer_input_size[1]
        m = read_manifest(self.transfer_manifest)
        frames = m.split(*self.transfer_splits) if self.transfer_splits else list(m)
        native = common_frame_size(m.path(f.rgb) for f in frames)
        size = transfer_input_size(native, self.s.teachers)
        print(f"   transfer frames (H x W): {native[0]}x{native[1]} -> {size[0]}x{size[1]} for teachers and students",
              flush=True)
        return size

    def precompute(self) -> None:
        splits = ["--splits", *self.transfer_splits] if self.transfer_splits else []
        todo = [t for t in self.s.teachers if not stores_complete([self.store(t)])]
        if not todo:
            return
        size = self.transfer_size()
        for t in todo:
            self.p.run(f"precompute-{t}", "teacher_server.cli", [
                "precompute", "--store", self.store(t), "--manifests", self.transfer_manifest, *splits,
                "--input-size", *size, "--arch", t, "--weights", self.s.weights,
                "--seed", self.s.weights_seed, "--loader-workers", self.loader_workers, "--device", self.s.device,
                "--no-progress"])

    def _stores_done(self) -> bool:
        return stores_complete(self.store(t) for t in self.s.teachers)

    # -- stage 4: students -----------------------------------------------------------------------------------
    def students(self) -> None:
        splits = ["--splits", *self.transfer_splits] if self.transfer_splits else []
        for t in self.s.teachers:
            if summaries_exist([self.student(t)]):
                continue
            with self.p.serving(f"serve-{t}", [self.store(t)]) as url:
                self.p.run(f"student-{t}", "student_trainer.cli", [
                    "transfer", "--modality", self.modality, "--trunk", "alexnet", "--teacher-url", url,
                    "--manifest", self.transfer_manifest, *splits, "--out", self.student(t),
                    "--iterations", self.s.transfer_iterations, "--batch-size", self.s.transfer_batch_size,
                    "--seed", self.s.student_seed, "--loader-workers", self.loader_workers, "--resume",
                    *self._common()])

    def _students_done(self) -> bool:
        return summaries_exist(self.student(t) for t in self.s.teachers)

    # -- stage 5: detectors ----------------------------------------------------------------------------------
    def detector_env(self, ev: Evaluation) -> dict[str, str]:
        """The detectors' shared settings as the env vars their settings read (``compare`` has no such flags)."""
        from student_trainer.detect_settings import DetectSettings

        values = {"train_splits": ",".join(ev.train_splits), "test_split": ev.test_split, "trunk": "alexnet",
                  "iterations": str(self.s.detector_iterations), "loader_workers": str(self.loader_workers)}
        if self.s.short_side is not None:
            values["short_side"] = str(self.s.short_side)
        return {env_name(DetectSettings, k): v for k, v in values.items()}

    def detectors(self, ev: Evaluation) -> None:
        env = self.detector_env(ev)
        proposals = ["--proposals", ev.proposals] if ev.proposals else []
        if not summaries_exist([self.rgb_run(ev)]):
            self.p.run(f"{ev.name}-rgb", "student_trainer.cli", [
                "detect", "--modality", "rgb", "--init", "copy-rgb", "--trunk-checkpoint", self.rgb_init,
                "--manifest", ev.manifest, "--out", self.rgb_run(ev), "--seed", self.s.seeds[0], *proposals,
                "--resume", *self._common()], env=env)
        first: Path | None = None
        for t in self.s.teachers:
            out = self.compare_run(ev, t)
            if first is not None:
                self._share_teacher_free_runs(first, out)
            if not summaries_exist([out], "compare.json"):
                self.p.run(f"{ev.name}-compare-{t}", "student_trainer.cli", [
                    "compare", "--modality", self.modality, "--manifest", ev.manifest, "--out", out,
                    "--rgb-run", self.rgb_run(ev), "--transfer", self.student(t) / "checkpoint.pt",
                    "--seeds", *self.s.seeds, *proposals, *self._common()], env=env)
            first = first or out

    def _share_teacher_free_runs(self, source: Path, dest: Path) -> None:
        """Link ``source``'s finished runs that no student enters (no init, copy from RGB, RGB alone) into
        ``dest``, whose ``compare`` then reads them instead of training them again with the same settings."""
        from student_trainer.compare import METHODS

        names = ["rgb"] + [f"{m.key}-seed{seed}" for m in METHODS if m.source in (None, "rgb") for seed in self.s.seeds]
        link_finished_runs(source, dest, names)

    def _detectors_done(self, ev: Evaluation) -> bool:
        return summaries_exist([self.rgb_run(ev)]) and summaries_exist(
            (self.compare_run(ev, t) for t in self.s.teachers), "compare.json")

    # -- the report ------------------------------------------------------------------------------------------
    def write_report(self) -> Path:
        """Assemble ``report/report.md`` and ``results.json`` from what the stages wrote; returns the path."""
        from shared.manifest import read_manifest
        from xmodal_pipeline.recipes.report import mean_table, merged_table, recipe_report
        from xmodal_pipeline.report import plot_transfer_curves, store_line, transfer_line

        s, evals = self.s, self.evaluations()
        self.report_dir.mkdir(parents=True, exist_ok=True)
        students = {f"{self.modality}-{t}": self.student(t) for t in s.teachers}
        plot_transfer_curves({n: d / "metrics.jsonl" for n, d in students.items()},
                             self.report_dir / "transfer_curves.png")
        device = json.loads((self.rgb_run(evals[0]) / "summary.json").read_text()).get("device", s.device)
        random = f", random teachers {s.weights_seed}" if s.weights == "random" else ""
        intro = [
            f"Profile `{s.profile}` (student-trainer `--profile {self.profile}`): students {s.transfer_iterations} "
            f"steps of {s.transfer_batch_size} pairs, detectors {s.detector_iterations} iterations, short side "
            f"{s.short_side or 'native'}; teachers {', '.join(TEACHER_LABELS[t] for t in s.teachers)} with "
            f"{s.weights} weights. Seeds: students {s.student_seed}, detectors {s.seeds}{random}. Ran on `{device}`.",
            "\n## Data\n",
            *(f"- `{m}`: {len(mf)} frames, splits {mf.splits()}" for m in self.report_manifests()
              if (mf := read_manifest(m))),
            "\n## Teacher feature stores\n", *(store_line(self.store(t)) for t in s.teachers),
            "\n## Students\n\n![transfer curves](transfer_curves.png)\n",
            *(line for n, d in students.items() if (line := transfer_line(n, d / "summary.json"))),
            "\n## Detection\n",
        ]
        tables = {ev.name: merged_table({t: json.loads((self.compare_run(ev, t) / "compare.json").read_text())
                                         for t in s.teachers}, TEACHER_LABELS, self.modality, s.weights, s.profile,
                                        ev.name)
                  for ev in evals}
        mean = mean_table(tables) if self.mean_over_evaluations else None
        return recipe_report(self.report_dir, self.title, intro, self.notes(), tables, mean, self.timer.timings,
                             {"settings": s.model_dump(mode="json"), "device": device,
                              "timings": self.timer.timings})

    # -- the run ---------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        return [
            ("weights", self.weights, self._weights_done),
            *self.data_stages(),
            ("precompute", self.precompute, self._stores_done),
            ("students", self.students, self._students_done),
            *((f"detectors {ev.name}", lambda ev=ev: self.detectors(ev), lambda ev=ev: self._detectors_done(ev))
              for ev in self.evaluations()),
        ]

    def run(self) -> Path:
        """Every stage (finished ones skipped), then the report; returns the report's path."""
        from xmodal_data.importers.stamp import check_stamp

        check_stamp(self.s.out, f"xmodal-recipe {self.recipe}", self.s.stamp())
        for name, fn, finished in self.stages():
            self.timer.run(name, fn, finished, skip_done=True)
        return self.write_report()


def run_recipe(recipe: type[RecipeRun], s: RecipeSettings) -> Path:
    """Run a recipe with its child processes in one group (all stopped on any error or Ctrl-C)."""
    t0 = time.perf_counter()
    with ChildProcesses(s.out / "logs") as procs:
        report = recipe(s, procs).run()
    print(f"report: {report} (total {(time.perf_counter() - t0) / 60:.1f} min; logs in {s.out / 'logs'})")
    return report
