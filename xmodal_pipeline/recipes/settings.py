"""Settings of the two recipes (``xmodal-recipe nyud2`` / ``jhmdb``): every field is a CLI flag and an env var.

``--profile paper`` (the default) gives the paper's schedules: students 20k steps of 128 pairs (the trainers'
``full`` profile: SGD lr 0.01, x0.1 after 70 %), detectors 40k iterations at lr 0.001, x0.1 at 30k (Fast R-CNN as
Gupta et al. ran it: fc 4096 + dropout, 2 images x 128 RoIs, up to 2000 proposals). ``--profile ci`` gives tiny
sizes for the tests (the trainers' ``tiny`` profile). Anything given explicitly wins over the profile. This module
imports no torch, so ``xmodal-recipe --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.settings import IntList, split_commas
from student_trainer.train_settings import apply_profile

__all__ = ["CHILD_PROFILE", "JhmdbRecipeSettings", "Nyud2RecipeSettings", "RecipeSettings"]

Teacher = Literal["alexnet", "vgg16"]
TeacherList = Annotated[list[Teacher], NoDecode, BeforeValidator(split_commas)]

CHILD_PROFILE = {"paper": "full", "ci": "tiny"}
"""The ``--profile`` of the student-trainer commands each recipe profile runs."""

_SCHEDULES: dict[str, dict[str, Any]] = {
    "paper": {"transfer_iterations": 20000, "transfer_batch_size": 128, "detector_iterations": 40000},
    # ci: a loader process costs more start-up than it saves on a few tiny frames
    "ci": {"transfer_iterations": 40, "transfer_batch_size": 8, "detector_iterations": 30, "short_side": 128,
           "loader_workers": 0},
}


class RecipeSettings(BaseModel):
    """What both recipes share: profile, teachers, schedules, seeds, device, output folder (each recipe's
    settings class adds ``BaseSettings`` and its env prefix)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = _SCHEDULES

    profile: Literal["paper", "ci"] = Field("paper", description="schedules: paper (the paper's, for a GPU) or ci "
                                            "(tiny, for tests)")
    out: Path = Field(Path("runs/recipe"), description="folder for data, teachers, stores, runs, logs and the "
                      "report (a rerun with the same settings resumes)")
    teachers: TeacherList = Field(["alexnet", "vgg16"], description="ImageNet teachers; each gets its feature "
                                  "store, its AlexNet student and its detectors")
    weights: Literal["imagenet", "random"] = Field(
        "imagenet", description="teacher weights: torchvision's ImageNet weights (from the torch cache, "
        "downloaded when reachable; checked before any long stage), or random (seeded: CI and smoke runs)")
    weights_seed: int = Field(0, description="seed of --weights random")
    student_seed: int = Field(0, description="seed of the students (weights, batch order, flips)")
    seeds: IntList = Field([0], description="detector seeds (every detector row is trained once per seed)")
    transfer_iterations: int = Field(20000, ge=1, description="student steps")
    transfer_batch_size: int = Field(128, ge=1, description="pairs per student step")
    detector_iterations: int = Field(40000, ge=1, description="Fast R-CNN iterations (lr x0.1 after three "
                                     "quarters of them)")
    short_side: int | None = Field(None, ge=8, description="detector frames resized to this shorter side")
    transfer_input_size: IntList | None = Field(
        None, description="H W every transfer frame is resized to for the teachers and students (default: the "
        "frames' most common size, or the nearest one at which the AlexNet student can match every teacher's "
        "pool5 map)")
    loader_workers: int | None = Field(None, ge=0, description="DataLoader processes of each precompute, student "
                                       "and detector (PNG decoding: a 128-pair student step at 480x640 needs many "
                                       "to keep a GPU busy; default: all cores but two)")
    device: str = Field("auto", description="device of every network ('auto': CUDA when present)")
    workers: int | None = Field(None, ge=1, description="processes of the importers and proposal generators "
                                "(default: all cores)")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data.setdefault("profile", "paper")
        return apply_profile(data, cls.PROFILES)

    @model_validator(mode="after")
    def _check_size(self) -> RecipeSettings:
        if self.transfer_input_size is not None and (len(self.transfer_input_size) != 2
                                                     or min(self.transfer_input_size) < 8):
            raise ValueError(f"--transfer-input-size is H W (each >= 8), got {self.transfer_input_size}")
        return self

    def stamp(self) -> dict[str, Any]:
        """The settings that shape the outputs: a rerun into the same ``--out`` must give the same ones (teachers
        and seeds may grow, device and process counts may change)."""
        return self.model_dump(mode="json", exclude={"out", "teachers", "seeds", "device", "workers",
                                                     "loader_workers"})


def _profiles(out: str, short_side: int) -> dict[str, dict[str, Any]]:
    return {"paper": {**_SCHEDULES["paper"], "out": f"runs/{out}", "short_side": short_side},
            "ci": {**_SCHEDULES["ci"], "out": f"runs/{out}-ci"}}


class Nyud2RecipeSettings(BaseSettings, RecipeSettings):
    """``xmodal-recipe nyud2``: Table 1 (HHA detection on the NYUD2 labelled set)."""

    model_config = SettingsConfigDict(env_prefix="XMODAL_RECIPE_NYUD2_", extra="ignore")
    # Gupta et al.'s Fast R-CNN on NYUD2 resizes the shorter side to 688 (capped at 2000).
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = _profiles("recipe-nyud2", 688)

    nyud2_mat: Path = Field(description="nyu_depth_v2_labeled.mat (MATLAB v7.3): the labelled set (detectors) and "
                            "its 'scenes' (which raw scene is train / val / test)")
    nyud2_meta: Path = Field(description="folder with Gupta et al.'s nyusplits.mat and classMapping40.mat")
    nyud2_raw: Path = Field(description="folder of the NYUD2 raw scene folders (bedroom_0001/ ..., or one folder "
                            "per extracted zip)")
    mcg: Path | None = Field(None, description="Gupta et al.'s MCG proposals: one .mat (bboxes + imnames, e.g. "
                             "nyud2_mcg_boxes.mat) or a folder of per-image img_NNNN.mat (MATLAB v5-v7); default: "
                             "the built-in generator")
    nyud2_crop: bool = Field(True, description="Gupta et al.'s 425x560 crop of the labelled frames (the MCG boxes "
                             "must be in the same coordinates: the recipe checks they fit the frames)")
    nyud2_limit: int | None = Field(None, ge=1, description="import only the first N labelled frames (a trial run; "
                                    "the paper uses all 1449)")
    nyud2_calibration: Path | None = Field(None, description="JSON of camera_params.m fields overriding the NYU "
                                           "toolbox constants (needed for raw frames other than 640x480)")
    every_s: float = Field(1.0, gt=0, description="one raw depth frame per this many seconds per scene (paper: "
                           "0.5-1)")
    max_sync_gap_s: float | None = Field(None, gt=0, description="drop raw depth frames whose nearest RGB frame is "
                                         "farther in time (default: keep all, as the toolbox)")
    allow_missing_scenes: bool = Field(False, description="import the train/val raw scenes found under --nyud2-raw "
                                       "when some are missing, instead of failing")


class JhmdbRecipeSettings(BaseSettings, RecipeSettings):
    """``xmodal-recipe jhmdb``: Table 3 (action detection on JHMDB from flow, AP averaged over the 3 splits)."""

    model_config = SettingsConfigDict(env_prefix="XMODAL_RECIPE_JHMDB_", extra="ignore")
    # JHMDB frames are 320x240; 600 is Fast R-CNN's own default scale (Girshick 2015), 688 was Gupta's NYUD2 one.
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = _profiles("recipe-jhmdb", 600)

    ucf101: Path = Field(description="folder holding UCF-101/ (or its class folders)")
    ucf101_list: Path = Field(description="UCF101 split list of the transfer videos: ucfTrainTestlist/trainlist01.txt")
    jhmdb: Path = Field(description="JHMDB folder with Rename_Images/, puppet_mask/ and splits/ (not moved "
                        "afterwards: the manifests point at its frames)")
    frames_per_video: int = Field(5, ge=1, description="evenly spaced (t, t+1) pairs per UCF101 video")
    ucf101_skip_bad: bool = Field(False, description="skip (and list in bad_videos.txt) UCF101 videos that cannot "
                                  "be decoded instead of failing")
    jhmdb_splits: IntList = Field([1, 2, 3], description="JHMDB splits to detect on (AP averaged over them)")

    @model_validator(mode="after")
    def _check_splits(self) -> JhmdbRecipeSettings:
        if not self.jhmdb_splits or not set(self.jhmdb_splits) <= {1, 2, 3}:
            raise ValueError(f"--jhmdb-splits are among 1, 2 and 3, got {self.jhmdb_splits}")
        self.jhmdb_splits = list(dict.fromkeys(self.jhmdb_splits))  # a split given twice would count twice
        return self
