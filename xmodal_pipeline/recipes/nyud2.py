"""``xmodal-recipe nyud2``: the paper's Table 1 on real NYUD2 — HHA detection from supervision transfer.

Data stages (before the shared teacher / student / detector stages of :mod:`xmodal_pipeline.recipes.base`):

* ``import labelled``: ``xmodal-data nyud2`` (the labelled set with Gupta et al.'s splits train 381 / val 414 /
  test 654 and 19 classes, their 425x560 crop by default) and ``xmodal-data encode --modalities hha``;
* ``import raw``: ``xmodal-data nyud2-raw`` of the raw video of the train and val scenes (never a test scene;
  scene splits from the labelled set's ``scenes`` and ``nyusplits.mat``) as synced, registered, hole-filled
  RGB-HHA pairs, one per ``--every-s`` seconds: what the students learn from;
* ``proposals``: Gupta et al.'s MCG boxes (``--mcg``, MATLAB layout) converted once into a proposal ``.npz``
  every detector reads, after checking that every labelled frame has boxes and that they fit its frame; without
  ``--mcg``, the built-in generator's cache (``student-trainer proposals``).

Evaluations: ``val`` (detectors trained on train, scored on val: the paper's ablations) and ``test`` (trained on
train + val, scored on test).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from shared.errors import DataError
from xmodal_pipeline.recipes.base import Evaluation, RecipeRun, Stage, run_recipe
from xmodal_pipeline.recipes.settings import Nyud2RecipeSettings

__all__ = ["Nyud2Recipe", "import_mcg", "run_nyud2"]

_ID_PREFIX = "nyud2."  # MATLAB image names img_5001 -> our frame ids nyud2.img_5001


def import_mcg(source: Path, manifest_path: Path, out: Path) -> Path:
    """Convert Gupta et al.'s MCG proposals into the ragged ``.npz`` the detectors read (atomically).

    Args:
        source: one ``.mat`` with ``bboxes`` + ``imnames`` (e.g. ``nyud2_mcg_boxes.mat``) or a folder of
            per-image ``img_NNNN.mat`` (MCG ``candidates`` or ``bboxes``); MATLAB 1-based ``[y1 x1 y2 x2]``.
        manifest_path: the labelled manifest: only its labelled frames are kept.
        out: the ``.npz`` to write.

    Raises:
        FileNotFoundError / ProposalFileError: an unreadable source (names the file and frame).
        DataError: a labelled frame without boxes, or boxes beyond a frame (another crop than the frames').
    """
    from shared.manifest import read_manifest
    from student_trainer.proposals import read_proposal_file, save_proposals

    frames, _ = read_proposal_file(source, id_prefix=_ID_PREFIX)
    labelled = [f for f in read_manifest(manifest_path) if f.labeled]
    missing = [f.id for f in labelled if f.id not in frames]
    if missing:
        raise DataError(f"{source} has no proposals for {len(missing)} of the {len(labelled)} labelled frames of "
                        f"{manifest_path}, e.g. {', '.join(missing[:3])} (names are matched as "
                        f"{_ID_PREFIX!r} + the MATLAB image name)")
    for f in labelled:
        boxes = frames[f.id][0]
        width, height = f.intrinsics.width, f.intrinsics.height  # type: ignore[union-attr]
        if len(boxes) and (boxes[:, 2].max() > width + 1 or boxes[:, 3].max() > height + 1):
            raise DataError(f"{source}: proposals of {f.id} reach x={boxes[:, 2].max():g}, y={boxes[:, 3].max():g} "
                            f"but its frame is {width}x{height}: were they made on frames with another crop? "
                            "(--nyud2-crop / --no-nyud2-crop)")
    scores = {f.id: s for f in labelled if (s := frames[f.id][1]) is not None}
    return save_proposals(out, {f.id: frames[f.id][0] for f in labelled},
                          scores if len(scores) == len(labelled) else None,
                          meta={"source": str(source), "id_prefix": _ID_PREFIX, "frames": len(labelled)})


class Nyud2Recipe(RecipeRun):
    """The NYUD2 recipe's folders, data stages and evaluations."""

    recipe = "nyud2"
    modality = "hha"
    transfer_splits: ClassVar[tuple[str, ...] | None] = ("train", "val")
    title = "NYUD2: HHA detection with supervision transfer (the paper's Table 1)"
    s: Nyud2RecipeSettings

    @property
    def labelled(self) -> Path:
        return self.data / "nyud2" / "manifest.jsonl"

    @property
    def transfer_manifest(self) -> Path:
        return self.data / "nyud2_raw" / "manifest.jsonl"

    @property
    def proposals_path(self) -> Path:
        """The MCG ``.npz`` (``--mcg``), else the generator's cache beside the labelled manifest."""
        if self.s.mcg is not None:
            return self.labelled.parent / "proposals_mcg.npz"
        from student_trainer.detect_settings import DETECT_PROFILES
        from student_trainer.proposals import default_cache_path

        return default_cache_path(self.labelled, DETECT_PROFILES[self.profile]["proposal_method"])

    # -- data stages -----------------------------------------------------------------------------------------
    def import_labelled(self) -> None:
        s = self.s
        limit = ["--limit", s.nyud2_limit] if s.nyud2_limit else []
        self.p.run("import-labelled", "xmodal_data.cli", [
            "nyud2", "--mat", s.nyud2_mat, "--meta", s.nyud2_meta, "--out", self.labelled.parent,
            "--crop" if s.nyud2_crop else "--no-crop", *limit, "--no-progress"])
        self.p.run("encode-labelled", "xmodal_data.cli", [
            "encode", "--manifest", self.labelled, "--modalities", "hha", *self._workers(), "--no-progress"])

    def _labelled_done(self) -> bool:
        from shared.errors import XModalError
        from shared.manifest import read_manifest

        try:
            return self.labelled.is_file() and all(f.hha for f in read_manifest(self.labelled))
        except XModalError:
            return False

    def import_raw(self) -> None:
        s = self.s
        options = [*(["--calibration", s.nyud2_calibration] if s.nyud2_calibration else []),
                   *(["--max-sync-gap-s", s.max_sync_gap_s] if s.max_sync_gap_s else []),
                   "--allow-missing-scenes" if s.allow_missing_scenes else "--no-allow-missing-scenes",
                   *self._workers()]
        self.p.run("import-raw", "xmodal_data.cli", [
            "nyud2-raw", "--root", s.nyud2_raw, "--out", self.transfer_manifest.parent, "--splits", "train", "val",
            "--every-s", s.every_s, "--labeled-mat", s.nyud2_mat, "--meta", s.nyud2_meta, *options, "--no-progress"])

    def proposals(self) -> None:
        if self.s.mcg is not None:
            import_mcg(self.s.mcg, self.labelled, self.proposals_path)
        else:
            self.p.run("proposals", "student_trainer.cli", [
                "proposals", "--manifest", self.labelled, "--profile", self.profile, *self._workers(),
                "--no-progress"])

    def _proposals_done(self) -> bool:
        from xmodal_pipeline.stages import proposal_cache_complete

        return self.proposals_path.is_file() if self.s.mcg else proposal_cache_complete(self.proposals_path)

    def data_stages(self) -> list[Stage]:
        return [
            ("import labelled", self.import_labelled, self._labelled_done),
            ("import raw", self.import_raw, self.transfer_manifest.is_file),
            ("proposals", self.proposals, self._proposals_done),
        ]

    def evaluations(self) -> list[Evaluation]:
        proposals = self.proposals_path if self.s.mcg else None
        return [Evaluation("val", self.labelled, ("train",), "val", proposals),
                Evaluation("test", self.labelled, ("train", "val"), "test", proposals)]

    # -- report ----------------------------------------------------------------------------------------------
    def report_manifests(self) -> list[Path]:
        return [self.labelled, self.transfer_manifest]

    def notes(self) -> list[str]:
        source = f"MCG boxes of Gupta et al. (`{self.s.mcg}`)" if self.s.mcg else "the built-in generator"
        return [
            "\n## About the rows\n",
            f"- VOC all-point AP at IoU 0.5 per class, Gupta et al.'s 19 classes; proposals: {source}. `val`: "
            "detectors trained on train; `test`: trained on train + val.",
            "- Students: CaffeNet-layout AlexNets (`--trunk alexnet`, 96-256-384-384-256) on HHA of the raw "
            "train/val scenes, one per teacher; the VGG16 one with the conv1 padding that matches VGG16's pool5.",
            "- RGB and *copy from RGB* use torchvision's AlexNet (64-192-384-256-256), the ImageNet network at "
            "hand; *copy from RGB* copies the RGB detector's trunk (ImageNet AlexNet fine-tuned on the RGB of "
            "the same training split), which is what `student-trainer compare` copies.",
            "- Fusion: the RGB detector and the HHA supervision-transfer detector on the same proposals, class "
            "scores (before the softmax) and box regressions averaged 0.5 / 0.5.",
        ]


def run_nyud2(s: Nyud2RecipeSettings) -> Path:
    """Run (or resume) the NYUD2 recipe; returns the report path."""
    return run_recipe(Nyud2Recipe, s)
