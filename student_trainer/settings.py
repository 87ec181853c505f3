"""Settings of the student-trainer commands; each field is a CLI flag and a ``STUDENT_*`` env var.

``profile`` fills the size-related fields a user did not set (tiny: tests, quick: the CPU demo,
full: a GPU run); anything given explicitly wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.settings import split_commas

__all__ = ["TRANSFER_PROFILES", "TransferSettings", "apply_profile"]


StrList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(split_commas)]
IntList = Annotated[list[int], NoDecode, BeforeValidator(split_commas)]

def apply_profile(data: Any, profiles: dict[str, dict[str, Any]]) -> Any:
    """Fill the fields a user did not set from the named profile (a ``mode="before"`` validator body)."""
    if isinstance(data, dict):
        for key, value in profiles.get(str(data.get("profile", "quick")), {}).items():
            data.setdefault(key, value)
    return data


TRANSFER_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"iterations": 40, "batch_size": 8, "width": 0.5, "checkpoint_every": 20, "log_every": 5},
    # quick: what fits the demo's 20-minute budget on 2 CPU cores (four students: two modalities x two teachers)
    "quick": {"iterations": 400, "batch_size": 16, "width": 1.0, "checkpoint_every": 100, "log_every": 20},
    "full": {"iterations": 20000, "batch_size": 128, "width": 1.0, "checkpoint_every": 1000, "log_every": 50},
}


class TransferSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDENT_", extra="ignore")
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = TRANSFER_PROFILES

    modality: Literal["hha", "flow"] = Field(description="student modality (its image is the student input)")
    teacher_url: str = Field("http://127.0.0.1:8000", description="teacher service base URL")
    teacher_token: SecretStr | None = Field(None, description="bearer token of the teacher service")
    teacher_wait: float = Field(300.0, ge=0, description="seconds to keep retrying a teacher service that is "
                                "unreachable or restarting (from the first failed try of a request) before "
                                "stopping with an error")
    teacher_backoff_max: float = Field(8.0, gt=0, description="longest pause between two retries of an "
                                       "unreachable teacher service, seconds (pauses double from 0.25 s)")
    manifest: Path = Field(description="manifest with the paired frames (HHA / flow images encoded)")
    splits: StrList | None = Field(None, description="training splits (default: depth_transfer / flow_transfer)")
    out: Path = Field(description="run folder: checkpoint.pt, metrics.jsonl, config.json, summary.json")
    profile: Literal["tiny", "quick", "full"] = Field("quick", description="size defaults for unset fields")
    iterations: int = Field(400, ge=0, description="optimiser steps (0 writes the initial trunk only)")
    batch_size: int = Field(16, ge=1, description="frames per step, over all ranks: under torchrun each rank takes "
                            "batch_size / ranks of them (a multiple of the number of ranks)")
    lr: float = Field(0.01, gt=0, description="initial learning rate (SGD, momentum 0.9)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    lr_milestones: FloatList = Field([0.7], description="fractions of the run where lr is multiplied by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0, description="learning-rate step factor")
    trunk: Literal["alexnet", "alexnet-small"] = Field("alexnet-small", description="student trunk layout")
    width: float = Field(1.0, gt=0, description="channel width multiplier of the student trunk")
    batch_norm: bool | None = Field(None, description="BatchNorm in the trunk (default: the layout's own)")
    target_scale: float | None = Field(None, gt=0, description="multiply targets by this (default: 1 / RMS)")
    flip: bool = Field(True, description="random horizontal flips (target map flipped too; flow u negated)")
    init: Literal["random", "copy-rgb"] = Field("random", description="student trunk initialisation")
    rgb_checkpoint: Path | None = Field(None, description="RGB trunk/detector checkpoint for --init copy-rgb")
    seed: int = Field(0, description="seed of weights, batch order and flips")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes (each with its own HTTP client)")
    prefetch: int = Field(4, ge=1, description="batches each loader process keeps ready")
    cache_dir: Path | None = Field(None, description="on-disk cache of fetched targets")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp: bool = Field(True, description="mixed precision on CUDA")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    log_every: int = Field(20, ge=1, description="steps between metrics lines")
    resume: bool = Field(False, description="continue from <out>/checkpoint.pt")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("teacher_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v: object) -> object:
        return None if v in ("", None) else v

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        return apply_profile(data, TRANSFER_PROFILES)

    @model_validator(mode="after")
    def _check(self) -> TransferSettings:
        if self.init == "copy-rgb" and self.rgb_checkpoint is None:
            raise ValueError("--init copy-rgb needs --rgb-checkpoint")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions in (0, 1), got {self.lr_milestones}")
        return self

    def default_splits(self) -> list[str]:
        return self.splits or [f"{'depth' if self.modality == 'hha' else 'flow'}_transfer"]
