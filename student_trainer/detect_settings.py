"""Settings of ``student-trainer detect`` (``STUDENT_DETECT_*`` env vars), ``proposals`` (``STUDENT_PROPOSALS_*``)
and ``compare`` (``STUDENT_COMPARE_*``); each field is a CLI flag and an env var. This module imports no torch,
so ``student-trainer --help`` stays fast.

``profile`` fills the size-related fields a user did not set; anything given explicitly wins. The proposal
method follows the profile in ``detect`` and in ``proposals`` alike (tiny / quick: ``edge_boxes``, full:
``hybrid``), so ``student-trainer proposals --manifest M`` fills the cache that ``detect`` with the same
``--profile`` reads.

* ``full``: the paper's Fast R-CNN schedule (lr 0.001, x0.1 after 75 % = 30k of 40k iterations, fc 4096) for a
  GPU run.
* ``quick``: the CPU demo on the synthetic set (96x128 frames): 500 iterations, fc width 256 without dropout,
  lr 0.03, the best 500 proposals per frame (how it was chosen: BENCHMARKS.md, "Detector schedule on the CPU
  profile").
* ``tiny``: unit tests (a few iterations, tiny widths).

Input scale: frames are used at their own size unless ``--short-side`` is given (the paper: 688, capped at
``--max-side`` 2000); proposals and boxes are rescaled by the same factor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.modalities import modality, names
from shared.settings import FloatList, IntList, StrList
from student_trainer.train_settings import (
    ModalityName,
    StudentModality,
    TrainSettings,
    TrunkName,
    apply_profile,
)

__all__ = ["DETECT_PROFILES", "CompareSettings", "DetectSettings", "ProposalSettings"]

DETECT_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "proposal_method": "edge_boxes",
        "iterations": 30, "fc_width": 32, "dropout": 0.5, "width": 0.5, "lr": 0.01, "rois_per_image": 64,
        "checkpoint_every": 10, "log_every": 5, "max_proposals": 300,
    },
    "quick": {
        "proposal_method": "edge_boxes",
        "iterations": 500, "fc_width": 256, "dropout": 0.0, "width": 1.0, "lr": 0.03, "rois_per_image": 128,
        "checkpoint_every": 200, "log_every": 20, "max_proposals": 500,
    },
    "full": {
        "proposal_method": "hybrid",
        "iterations": 40000, "fc_width": 4096, "dropout": 0.5, "width": 1.0, "lr": 0.001, "rois_per_image": 128,
        "checkpoint_every": 2000, "log_every": 50, "max_proposals": 2000,
    },
}

# ``student-trainer proposals`` takes the same --profile, so its cache is the one ``detect`` looks for.
_PROPOSAL_PROFILES = {name: {"method": p["proposal_method"]} for name, p in DETECT_PROFILES.items()}
_PROPOSAL_METHODS = Literal["hybrid", "edge_boxes", "selective_search"]


class DetectSettings(TrainSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENT_DETECT_", extra="ignore")
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = DETECT_PROFILES
    RERUN_MAY_CHANGE: ClassVar[frozenset[str]] = TrainSettings.RERUN_MAY_CHANGE | {"eval_batch_size"}

    modality: ModalityName = Field(description=f"detector input modality: one of {names()}")
    manifest: Path = Field(description="manifest with labelled frames (HHA / flow images encoded)")
    out: Path = Field(description="run folder: checkpoint.pt, metrics.jsonl, config.json, eval.json, ...")
    init: Literal["random", "copy-rgb", "transfer", "transfer-frozen"] = Field(
        "random", description="trunk initialisation: no init, RGB weights copied, a supervision-transfer student; "
        "transfer-frozen is transfer with --freeze-trunk")
    freeze_trunk: bool = Field(
        False, description="train only the fc layers and the heads: the trunk keeps its init weights and BatchNorm "
        "statistics (shows what the init alone carries)")
    trunk_checkpoint: Path | None = Field(
        None, description="student / teacher / detector checkpoint whose trunk initialises the detector "
        "(required unless --init random)")
    proposals: Path | None = Field(
        None, description="proposals .npz (frame id -> (N, 4) boxes); default: generated once and cached "
        "beside the manifest")
    proposal_method: _PROPOSAL_METHODS = Field(
        "edge_boxes", description="generator used when --proposals is not given (edge_boxes: ~3x faster than "
        "hybrid, slightly lower recall)")
    train_splits: StrList | None = Field(
        None, description="training splits (default: the modality's, rgb_train / depth_train / flow_train)")
    test_split: str | None = Field(None, description="evaluation split (default: the modality's, depth_test; "
                                   "flow_test for flow)")
    iterations: int = Field(500, ge=0, description="optimiser steps (0: evaluate the initial detector)")
    images_per_batch: int = Field(2, ge=1, description="images per step (2 in the paper)")
    rois_per_image: int = Field(128, ge=1, description="sampled RoIs per image (128 in the paper)")
    fg_fraction: float = Field(0.25, gt=0, le=1, description="largest foreground share of the sampled RoIs")
    fg_iou: float = Field(0.5, gt=0, le=1, description="IoU that makes a RoI foreground (background below)")
    lr: float = Field(0.03, gt=0, description="initial learning rate (SGD; the paper's 0.001 in the full profile)")
    lr_milestones: FloatList = Field([0.75], description="fractions of the run where lr is multiplied by lr_gamma")
    trunk_lr_mult: float = Field(1.0, ge=0, description="the trunk's conv layers learn at lr x this (the fc layers "
                                 "and heads at lr): below 1 keeps more of what the init carries")
    box_loss_beta: float = Field(1.0, ge=0, description="smooth-L1 beta of the box loss (Fast R-CNN 1, "
                                 "torchvision 1/9)")
    trunk: TrunkName = Field("alexnet-small", description="trunk layout (--init random)")
    fc_width: int = Field(256, ge=1, description="width of fc6 and fc7 (4096 in the paper)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after fc6 and fc7 (0.5 in the paper and the full "
                           "profile)")
    short_side: int | None = Field(None, ge=8, description="resize frames to this shorter side (paper: 688; "
                                   "default: native size)")
    max_side: int = Field(2000, ge=8, description="cap of the longer side after resizing")
    max_proposals: int = Field(500, ge=1, description="first (best) proposals used per frame (2000 in the full "
                               "profile)")
    flip: bool = Field(True, description="random horizontal flips in training (the modality's exact mirror: flow u "
                       "negated, or the flow image of the mirrored pair where the manifest has it)")
    score_thresh: float = Field(1e-3, ge=0, lt=1, description="evaluation score threshold")
    nms_thresh: float = Field(0.3, gt=0, le=1, description="evaluation per-class NMS IoU")
    detections_per_image: int = Field(100, ge=1, description="detections kept per image")
    eval_batch_size: int = Field(8, ge=1, description="frames per evaluation forward")
    loader_workers: int = Field(1, ge=0, description="DataLoader processes")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")

    @model_validator(mode="after")
    def _check(self) -> DetectSettings:
        if self.init != "random" and self.trunk_checkpoint is None:
            raise ValueError(f"--init {self.init} needs --trunk-checkpoint")
        return self

    def default_train_splits(self) -> list[str]:
        return self.train_splits or [modality(self.modality).train_split]

    def default_test_split(self) -> str:
        return self.test_split or modality(self.modality).test_split

    @property
    def trunk_frozen(self) -> bool:
        return self.freeze_trunk or self.init == "transfer-frozen"

    def rerun_may_change(self) -> frozenset[str]:
        # a frozen trunk does not learn, so its lr factor changes nothing (bench.shape reuses frozen runs so)
        return super().rerun_may_change() | ({"trunk_lr_mult"} if self.trunk_frozen else set())


class ProposalSettings(BaseSettings):
    """``student-trainer proposals``: fill the proposal cache once, before detectors run (in parallel) on it."""

    model_config = SettingsConfigDict(env_prefix="STUDENT_PROPOSALS_", extra="ignore")
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = _PROPOSAL_PROFILES

    manifest: Path = Field(description="manifest whose frames get proposals")
    out: Path | None = Field(None, description="cache .npz (default: proposals_<method>.npz beside the manifest, "
                             "where `detect` looks for it)")
    profile: Literal["tiny", "quick", "full"] = Field(
        "quick", description="the detector profile the cache is for: it picks --method as `detect` does")
    method: _PROPOSAL_METHODS = Field(
        "edge_boxes", description="generator (edge_boxes: ~3x faster than hybrid, slightly lower recall)")
    splits: StrList | None = Field(None, description="splits to cover (default: every labelled frame)")
    workers: int | None = Field(None, ge=1, description="processes (default: one per CPU)")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        return apply_profile(data, _PROPOSAL_PROFILES)


class CompareSettings(BaseSettings):
    """``student-trainer compare``: every detector of the paper's Table 1 for one modality."""

    model_config = SettingsConfigDict(env_prefix="STUDENT_COMPARE_", extra="ignore")

    modality: StudentModality = Field(description=f"the new modality: one of {names(students_only=True)}")
    manifest: Path = Field(description="manifest with labelled frames of the modality and RGB")
    out: Path = Field(description="folder for every detector run, compare.json and report.md")
    rgb_run: Path = Field(description="run folder of the RGB detector (student-trainer detect --modality rgb)")
    copy_rgb: Path | None = Field(None, description="RGB checkpoint whose trunk the copy-from-RGB rows copy, e.g. "
                                  "the ImageNet-like teacher (student-trainer classify) as in the paper; default: "
                                  "the RGB detector's")
    transfer: Path = Field(description="supervision-transfer student checkpoint (trained teacher)")
    control: Path | None = Field(None, description="student checkpoint transferred from an untrained teacher")
    seeds: IntList = Field([0], description="detector seeds (mean and spread over them)")
    profile: Literal["tiny", "quick", "full"] = Field("quick", description="detector size profile")
    trunk_lr_mult: float = Field(1.0, ge=0, description="fine-tuned rows: the trunk learns at the detector's lr x "
                                 "this (the same for every init)")
    iterations: int | None = Field(None, ge=1, description="optimiser steps of every modality detector (default: "
                                   "the profile's; RGB alone keeps its own run's)")
    fusion_val_split: str | None = Field(
        None, description="labelled split on which each seed's late-fusion RGB weight is chosen (an extra fusion row "
        "besides the paper's 0.5; default: the modality's validation split, depth_val / flow_val, where the manifest "
        "has it)")
    proposals: Path | None = Field(None, description="proposals .npz (default: generated and cached)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    progress: bool = Field(True, description="show progress bars")
