"""What the training commands (``transfer``, ``detect``) share: one settings base with the run folder, the SGD step
schedule, the trunk layout, seeds, device and cadence, plus the profile mechanism.

``profile`` fills the size-related fields a user did not set (tiny: tests, quick: the CPU demo, full: a GPU run)
from the subclass's ``PROFILES``; anything given explicitly wins. Modality and trunk choices are derived from their
registries (:mod:`shared.modalities`, :mod:`shared.nets.specs`). This module imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings

from shared.modalities import modality, names
from shared.nets.specs import TRUNK_SPECS
from shared.settings import AMP_HELP, FloatList

__all__ = [
    "ModalityName",
    "Profile",
    "StudentModality",
    "TrainSettings",
    "TrunkName",
    "apply_profile",
]

Profile = Literal["tiny", "quick", "full"]
TrunkName = Literal[tuple(TRUNK_SPECS)]  # type: ignore[valid-type]


def _known(name: str) -> str:
    modality(name)  # ValueError naming the known ones
    return name


def _student(name: str) -> str:
    if not modality(name).student:
        raise ValueError(f"{name!r} has no transfer pairs (it is the teacher's modality); students: "
                         f"{names(students_only=True)}")
    return name


ModalityName = Annotated[str, AfterValidator(_known)]
StudentModality = Annotated[str, AfterValidator(_student)]


def apply_profile(data: Any, profiles: dict[str, dict[str, Any]]) -> Any:
    """Fill the fields a user did not set from the named profile (a ``mode="before"`` validator body)."""
    if isinstance(data, dict):
        for key, value in profiles.get(str(data.get("profile", "quick")), {}).items():
            data.setdefault(key, value)
    return data


class TrainSettings(BaseSettings):
    """Fields every training command has (each subclass sets its env prefix, profiles and own defaults)."""

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {}
    # where and how a run reports, not what it computes: a resumed or re-read run may change these
    RERUN_MAY_CHANGE: ClassVar[frozenset[str]] = frozenset(
        {"out", "device", "progress", "resume", "loader_workers", "log_every", "checkpoint_every"})

    def rerun_may_change(self) -> frozenset[str]:
        """Fields a resumed or re-read run may change: where and how it reports, not what it computes."""
        return self.RERUN_MAY_CHANGE

    manifest: Path = Field(description="manifest of the frames to train on")
    out: Path = Field(description="run folder: checkpoint.pt, metrics.jsonl, config.json, summary.json")
    profile: Profile = Field("quick", description="size defaults for unset fields")
    iterations: int = Field(description="optimiser steps")
    lr: float = Field(gt=0, description="initial learning rate (SGD)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    lr_milestones: FloatList = Field(description="fractions of the run where lr is multiplied by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0, description="learning-rate step factor")
    trunk: TrunkName = Field("alexnet-small", description="trunk layout")
    width: float = Field(1.0, gt=0, description="channel width multiplier of the trunk")
    batch_norm: bool | None = Field(None, description="BatchNorm in the trunk (default: the layout's own)")
    seed: int = Field(0, description="seed of weights, batch order and flips")
    loader_workers: int = Field(ge=0, description="DataLoader processes")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp: bool | None = Field(None, description=AMP_HELP)
    checkpoint_every: int = Field(ge=1, description="steps between checkpoints")
    log_every: int = Field(20, ge=1, description="steps between metrics lines")
    resume: bool = Field(False, description="continue from <out>/checkpoint.pt")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        return apply_profile(data, cls.PROFILES)

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainSettings:
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions in (0, 1), got {self.lr_milestones}")
        return self

    def trunk_overrides(self) -> dict[str, Any]:
        """The ``trunk_spec`` overrides these settings ask for (width; BatchNorm when set)."""
        return {"width": self.width, **({"batch_norm": self.batch_norm} if self.batch_norm is not None else {})}
