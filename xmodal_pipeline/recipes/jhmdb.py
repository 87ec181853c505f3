"""``xmodal-recipe jhmdb``: the paper's Table 3 — action detection on JHMDB from flow with supervision transfer.

Data stages (before the shared teacher / student / detector stages of :mod:`xmodal_pipeline.recipes.base`):

* ``import ucf101``: ``xmodal-data ucf101`` of the videos of a split list (``trainlist01.txt``: the ~9.5K
  split-1 training videos), ``--frames-per-video`` evenly spaced (t, t+1) pairs each with its flow image: what
  the flow students learn from (split ``flow_transfer``);
* ``import jhmdb``: ``xmodal-data jhmdb`` of each JHMDB split into one folder (``manifest_split<k>.jsonl``, splits
  ``flow_train`` / ``flow_test``; a person box per frame from the puppet mask, labelled with the video's action,
  21 classes; flow images computed once for the three splits);
* ``proposals``: the built-in generator (``student-trainer proposals``) over every split's frames, into the one
  cache beside the manifests that every detector reads.

Evaluations: ``split1`` .. ``split3`` (detectors trained on the split's train videos, scored on its test
videos); the report adds each row's AP averaged over the splits.
"""

from __future__ import annotations

from pathlib import Path

from xmodal_pipeline.recipes.base import Evaluation, RecipeRun, Stage, run_recipe
from xmodal_pipeline.recipes.settings import JhmdbRecipeSettings

__all__ = ["JhmdbRecipe", "run_jhmdb"]


class JhmdbRecipe(RecipeRun):
    """The JHMDB recipe's folders, data stages and evaluations."""

    recipe = "jhmdb"
    modality = "flow"
    title = "JHMDB: action detection from flow with supervision transfer (the paper's Table 3)"
    mean_over_evaluations = True
    s: JhmdbRecipeSettings

    @property
    def transfer_manifest(self) -> Path:
        return self.data / "ucf101" / "manifest.jsonl"

    def split_manifest(self, k: int) -> Path:
        from xmodal_data.importers.jhmdb import manifest_name

        return self.data / "jhmdb" / manifest_name(k)

    @property
    def proposals_path(self) -> Path:
        """The generator's cache, shared by the split manifests (they lie in one folder)."""
        from student_trainer.detect_settings import DETECT_PROFILES
        from student_trainer.proposals import default_cache_path

        return default_cache_path(self.split_manifest(1), DETECT_PROFILES[self.profile]["proposal_method"])

    # -- data stages -----------------------------------------------------------------------------------------
    def import_ucf101(self) -> None:
        s = self.s
        self.p.run("import-ucf101", "xmodal_data.cli", [
            "ucf101", "--root", s.ucf101, "--list", s.ucf101_list, "--frames-per-video", s.frames_per_video,
            "--skip-bad" if s.ucf101_skip_bad else "--no-skip-bad", "--out", self.transfer_manifest.parent,
            *self._workers(), "--no-progress"])

    def import_jhmdb(self) -> None:
        for k in self.s.jhmdb_splits:
            if not self.split_manifest(k).is_file():
                self.p.run(f"import-jhmdb-split{k}", "xmodal_data.cli", [
                    "jhmdb", "--root", self.s.jhmdb, "--split", k, "--out", self.split_manifest(k).parent,
                    *self._workers(), "--no-progress"])

    def _jhmdb_done(self) -> bool:
        return all(self.split_manifest(k).is_file() for k in self.s.jhmdb_splits)

    def proposals(self) -> None:
        for k in self.s.jhmdb_splits:
            self.p.run(f"proposals-split{k}", "student_trainer.cli", [
                "proposals", "--manifest", self.split_manifest(k), "--profile", self.profile, *self._workers(),
                "--no-progress"])

    def _proposals_done(self) -> bool:
        from shared.manifest import read_manifest
        from xmodal_pipeline.stages import proposal_cache_complete

        if not self._jhmdb_done():
            return False
        ids = {f.id for k in self.s.jhmdb_splits for f in read_manifest(self.split_manifest(k)) if f.labeled}
        return proposal_cache_complete(self.proposals_path, ids)

    def data_stages(self) -> list[Stage]:
        return [
            ("import ucf101", self.import_ucf101, self.transfer_manifest.is_file),
            ("import jhmdb", self.import_jhmdb, self._jhmdb_done),
            ("proposals", self.proposals, self._proposals_done),
        ]

    def evaluations(self) -> list[Evaluation]:
        return [Evaluation(f"split{k}", self.split_manifest(k), ("flow_train",), "flow_test")
                for k in self.s.jhmdb_splits]

    # -- report ----------------------------------------------------------------------------------------------
    def report_manifests(self) -> list[Path]:
        return [self.transfer_manifest, *(self.split_manifest(k) for k in self.s.jhmdb_splits)]

    def notes(self) -> list[str]:
        return [
            "\n## About the rows\n",
            "- Per-frame action detection: VOC all-point AP at IoU 0.5 per action class (21), one person box per "
            "frame from the puppet mask labelled with the video's action; `splitK`: detectors trained on the "
            "split's train videos, scored on its test videos; the last table averages each row over the splits.",
            "- Students: CaffeNet-layout AlexNets (`--trunk alexnet`) on the flow images of UCF101 split-1 "
            f"training videos ({self.s.frames_per_video} pairs per video), one per teacher; the VGG16 one with the "
            "conv1 padding that matches VGG16's pool5.",
            "- RGB and *copy from RGB* use torchvision's AlexNet (64-192-384-256-256); *copy from RGB* copies the "
            "RGB detector's trunk (ImageNet AlexNet fine-tuned on the split's RGB frames), which is what "
            "`student-trainer compare` copies. Proposals: the built-in generator on RGB + flow.",
        ]


def run_jhmdb(s: JhmdbRecipeSettings) -> Path:
    """Run (or resume) the JHMDB recipe; returns the report path."""
    return run_recipe(JhmdbRecipe, s)
