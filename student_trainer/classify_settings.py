"""Settings of ``student-trainer classify`` (``STUDENT_CLASSIFY_*`` env vars): the ImageNet-like RGB teacher, a
trunk trained to classify object crops of separate labelled renders (the synthetic set's ``pretrain-*`` profiles:
36 shape x look labels), not on any detection split. The shared training fields:
:class:`student_trainer.train_settings.TrainSettings`. This module imports no torch.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import FloatList, StrList
from student_trainer.train_settings import TrainSettings

__all__ = ["CLASSIFY_PROFILES", "ClassifySettings"]

CLASSIFY_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"iterations": 20, "batch_size": 16, "crop_size": 32, "width": 0.5, "checkpoint_every": 10,
             "log_every": 5, "loader_workers": 0},
    # quick: the CPU demo's teacher (how it was chosen: BENCHMARKS.md, "The benchmark's shape")
    "quick": {"iterations": 2000, "batch_size": 64, "crop_size": 48, "width": 1.0, "checkpoint_every": 500,
              "log_every": 50, "loader_workers": 1},
    "full": {"iterations": 40000, "batch_size": 128, "crop_size": 96, "width": 1.0, "checkpoint_every": 2000,
             "log_every": 100, "loader_workers": 4},
}


class ClassifySettings(TrainSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENT_CLASSIFY_", extra="ignore")
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = CLASSIFY_PROFILES

    train_splits: StrList = Field(["rgb_pretrain"], description="splits whose labelled objects are the training "
                                  "crops")
    test_split: str = Field("rgb_pretrain_test", description="held-out split: top-1 accuracy after training")
    iterations: int = Field(2000, ge=0, description="optimiser steps (0 writes the initial trunk only)")
    batch_size: int = Field(64, ge=1, description="crops per step")
    crop_size: int = Field(48, ge=16, description="side of the square crop, pixels (each object's box with its "
                           "context, resized to this)")
    context: float = Field(1.4, ge=1.0, description="crop side / the box's longer side")
    jitter: float = Field(0.15, ge=0, lt=0.5, description="training augmentation: the crop's scale varies by up to "
                          "this fraction and its centre moves by up to this fraction of its side")
    min_box: int = Field(6, ge=1, description="objects whose box is smaller than this on both sides are skipped, "
                         "pixels")
    lr: float = Field(0.05, gt=0, description="initial learning rate (SGD, momentum 0.9)")
    lr_milestones: FloatList = Field([0.6, 0.85], description="fractions of the run where lr is multiplied by "
                                     "lr_gamma")
    flip: bool = Field(True, description="random horizontal flips in training")
    loader_workers: int = Field(1, ge=0, description="DataLoader processes")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")

    @model_validator(mode="after")
    def _check(self) -> ClassifySettings:
        if self.test_split in self.train_splits:
            raise ValueError(f"--test-split {self.test_split!r} is also a training split")
        return self
