"""Settings of ``student-trainer transfer``; each field is a CLI flag and a ``STUDENT_*`` env var (the shared
training fields: :class:`student_trainer.train_settings.TrainSettings`). This module imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.modalities import modality, names
from shared.settings import FloatList, StrList
from student_trainer.train_settings import StudentModality, TrainSettings

__all__ = ["FLIP_MODES", "TRANSFER_PROFILES", "TransferSettings"]

TRANSFER_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"iterations": 40, "batch_size": 8, "width": 0.5, "checkpoint_every": 20, "log_every": 5},
    # quick: what fits the demo's 20-minute budget on 2 CPU cores (four students: two modalities x two teachers)
    "quick": {"iterations": 400, "batch_size": 16, "width": 1.0, "checkpoint_every": 100, "log_every": 20},
    "full": {"iterations": 20000, "batch_size": 128, "width": 1.0, "checkpoint_every": 1000, "log_every": 50},
}
FLIP_MODES = ("exact", "mirrored", "none")


class TransferSettings(TrainSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENT_", extra="ignore")
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = TRANSFER_PROFILES
    # the service may move (the teacher's identity is checked against the checkpoint's) and the held-out
    # evaluation is redone at the end of every run
    RERUN_MAY_CHANGE: ClassVar[frozenset[str]] = TrainSettings.RERUN_MAY_CHANGE | {
        "teacher_url", "teacher_token", "teacher_wait", "teacher_backoff_max", "prefetch", "cache_dir", "eval_splits"}

    modality: StudentModality = Field(description=f"student modality (its image is the student input): one of "
                                      f"{names(students_only=True)}")
    teacher_url: str = Field("http://127.0.0.1:8000", description="teacher service base URL")
    teacher_token: SecretStr | None = Field(None, description="bearer token of the teacher service")
    teacher_wait: float = Field(300.0, ge=0, description="seconds to keep retrying a teacher service that is "
                                "unreachable or restarting (from the first failed try of a request) before "
                                "stopping with an error")
    teacher_backoff_max: float = Field(8.0, gt=0, description="longest pause between two retries of an "
                                       "unreachable teacher service, seconds (pauses double from 0.25 s)")
    manifest: Path = Field(description="manifest with the paired frames (HHA / flow images encoded)")
    splits: StrList | None = Field(None, description="training splits (default: the modality's transfer split, "
                                   "depth_transfer / flow_transfer)")
    eval_splits: StrList | None = Field(None, description="held-out splits whose residual and cosine to the "
                                        "teacher are measured after training (default: none)")
    iterations: int = Field(400, ge=0, description="optimiser steps (0 writes the initial trunk only)")
    batch_size: int = Field(16, ge=1, description="frames per step, over all ranks: under torchrun each rank takes "
                            "batch_size / ranks of them (a multiple of the number of ranks)")
    lr: float = Field(0.01, gt=0, description="initial learning rate (SGD, momentum 0.9)")
    lr_milestones: FloatList = Field([0.7], description="fractions of the run where lr is multiplied by lr_gamma")
    target_scale: float | None = Field(None, gt=0, description="multiply targets by this (default: 1 / RMS)")
    flip: Literal["exact", "mirrored", "none"] = Field(
        "exact", description="random horizontal flips of the student input, with as target: exact = the teacher's "
        "map of the mirrored RGB frame (the store's mirror view) and, for flow, the flow image of the mirrored pair; "
        "mirrored = the cached map flipped (an approximation: a CNN is not mirror-equivariant); none = no flips")
    init: Literal["random", "copy-rgb"] = Field("random", description="student trunk initialisation")
    rgb_checkpoint: Path | None = Field(None, description="RGB trunk/detector checkpoint for --init copy-rgb")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes (each with its own HTTP client)")
    prefetch: int = Field(4, ge=1, description="batches each loader process keeps ready")
    cache_dir: Path | None = Field(None, description="on-disk cache of fetched targets")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")

    @field_validator("teacher_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: object) -> object:
        return None if v in ("", None) else v

    @model_validator(mode="after")
    def _check(self) -> TransferSettings:
        if self.init == "copy-rgb" and self.rgb_checkpoint is None:
            raise ValueError("--init copy-rgb needs --rgb-checkpoint")
        return self

    def default_splits(self) -> list[str]:
        return self.splits or [str(modality(self.modality).transfer_split)]
