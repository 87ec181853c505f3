"""Settings of the synthetic dataset, with named profiles (``tiny`` for tests, ``quick`` demo, ``full``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.camera import Intrinsics
from shared.errors import ConfigError
from xmodal_data.synth.catalogue import SHAPE_CLASSES
from xmodal_data.synth.motion import MotionConfig
from xmodal_data.synth.sensor import KinectNoise

__all__ = ["PROFILES", "SPLIT_KINDS", "SplitCounts", "SynthConfig"]

SPLIT_KINDS: dict[str, tuple[Literal["depth", "flow"], bool]] = {
    "rgb_train": ("depth", True),
    "depth_transfer": ("depth", False),
    "flow_transfer": ("flow", False),
    "depth_train": ("depth", True),
    "flow_train": ("flow", True),
    "depth_test": ("depth", True),
    "flow_test": ("flow", True),
}
"""Split name -> (kind, labelled). ``depth`` frames: RGB + depth + raw depth; ``flow`` frames: RGB at t and
t+1. ``rgb_train`` is the teacher's labelled RGB (its depth is there too, for any other use)."""


class SplitCounts(BaseModel):
    """Frames per split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rgb_train: int = Field(ge=0)
    depth_transfer: int = Field(ge=0)
    flow_transfer: int = Field(ge=0)
    depth_train: int = Field(ge=0)
    flow_train: int = Field(ge=0)
    depth_test: int = Field(ge=0)
    flow_test: int = Field(ge=0)

    def items(self) -> list[tuple[str, int]]:
        """(split, count) in :data:`SPLIT_KINDS` order."""
        return [(name, getattr(self, name)) for name in SPLIT_KINDS]


class SynthConfig(BaseModel):
    """Everything that decides the synthetic dataset's content (same config + seed -> same bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0)
    height: int = Field(ge=16, le=2048, description="image rows, pixels")
    width: int = Field(ge=16, le=2048, description="image columns, pixels")
    focal_ratio: float = Field(0.81, gt=0, description="focal length / image width (0.81 ~ NYUD2 Kinect)")
    classes: tuple[str, ...] = SHAPE_CLASSES
    splits: SplitCounts
    objects_per_scene: tuple[int, int] = (2, 5)
    clutter_per_scene: tuple[int, int] = (0, 4)
    shared_appearance_prob: float = Field(0.15, ge=0, le=1)
    min_visible_pixels: int = Field(20, ge=1)
    min_visible_fraction: float = Field(0.1, ge=0, le=1, description="of the object's unoccluded in-image area")
    rgb_noise: float = Field(0.01, ge=0, description="std of RGB camera noise, fraction of full scale")
    sensor: KinectNoise = KinectNoise()
    motion: MotionConfig = MotionConfig()  # how a flow clip moves from t to t+1 (never changes frame t)

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in classes if c not in SHAPE_CLASSES]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; the generator draws {list(SHAPE_CLASSES)}")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list without repeats, got {list(classes)}")
        return classes

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        for name in ("objects_per_scene", "clutter_per_scene"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got ({lo}, {hi})")
        if self.objects_per_scene[1] < 1:
            raise ValueError("objects_per_scene must allow at least one object")
        return self

    def intrinsics(self) -> Intrinsics:
        """The camera of every frame: square pixels, principal point at the image centre (0-based)."""
        f = self.focal_ratio * self.width
        return Intrinsics(
            fx=f, fy=f, cx=(self.width - 1) / 2, cy=(self.height - 1) / 2, width=self.width, height=self.height
        )

    @classmethod
    def profile(cls, name: str) -> SynthConfig:
        """A named profile: ``tiny`` (unit tests), ``quick`` (the demo, about a minute on 2 cores), ``full``.

        Raises:
            ConfigError: (a ValueError) for an unknown name, listing the known ones.
        """
        try:
            return cls.model_validate(PROFILES[name])
        except KeyError:
            raise ConfigError(f"unknown synth profile {name!r}; expected one of {sorted(PROFILES)}") from None


PROFILES: dict[str, dict] = {
    "tiny": {
        "height": 64, "width": 80,
        "splits": {"rgb_train": 6, "depth_transfer": 4, "flow_transfer": 4, "depth_train": 3, "flow_train": 3,
                   "depth_test": 3, "flow_test": 3},
    },
    "quick": {
        "height": 96, "width": 128,
        "splits": {"rgb_train": 1000, "depth_transfer": 1000, "flow_transfer": 800, "depth_train": 30,
                   "flow_train": 30, "depth_test": 250, "flow_test": 250},
    },
    "full": {
        "height": 240, "width": 320,
        "splits": {"rgb_train": 5000, "depth_transfer": 5000, "flow_transfer": 4000, "depth_train": 300,
                   "flow_train": 300, "depth_test": 1000, "flow_test": 1000},
    },
}
"""Profile name -> SynthConfig fields (anything not given takes its default)."""
