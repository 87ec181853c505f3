"""Settings of the synthetic dataset, with named profiles (``tiny`` for tests, ``quick`` demo, ``full``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.camera import Intrinsics
from shared.errors import ConfigError
from xmodal_data.synth.catalogue import SHAPE_CLASSES, look_label
from xmodal_data.synth.motion import MotionConfig
from xmodal_data.synth.sensor import KinectNoise

__all__ = ["LABEL_SPACES", "PROFILES", "SPLIT_KINDS", "SplitCounts", "SynthConfig"]

SPLIT_KINDS: dict[str, tuple[Literal["depth", "flow", "rgb"], bool]] = {
    "rgb_train": ("depth", True),
    "depth_transfer": ("depth", False),
    "flow_transfer": ("flow", False),
    "depth_train": ("depth", True),
    "flow_train": ("flow", True),
    "depth_test": ("depth", True),
    "flow_test": ("flow", True),
    "depth_val": ("depth", True),
    "flow_val": ("flow", True),
    "rgb_pretrain": ("rgb", True),
    "rgb_pretrain_test": ("rgb", True),
}
"""Split name -> (kind, labelled). ``depth`` frames: RGB + depth + raw depth; ``flow`` frames: RGB at t and
t+1; ``rgb`` frames: RGB only. ``rgb_train`` is the teacher's labelled RGB (its depth is there too, for any other
use). ``depth_val`` / ``flow_val``: labelled frames no detector trains or is tested on, for choices such as
the late-fusion weight. ``rgb_pretrain`` / ``rgb_pretrain_test``: the separate labelled RGB renders of the
``pretrain-*`` profiles (the ImageNet-like teacher's training and held-out set, in a dataset of their own)."""

LABEL_SPACES = ("shape", "shape_look")
"""What an object's label names: ``shape`` its class (the detection classes); ``shape_look`` its class and the class
whose look (hue + pattern) it wears, e.g. ``cone/blue-checker`` (6 x 6 = 36 labels: the broader label space of the
pretraining renders)."""


class SplitCounts(BaseModel):
    """Frames per split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rgb_train: int = Field(0, ge=0)
    depth_transfer: int = Field(0, ge=0)
    flow_transfer: int = Field(0, ge=0)
    depth_train: int = Field(0, ge=0)
    flow_train: int = Field(0, ge=0)
    depth_test: int = Field(0, ge=0)
    flow_test: int = Field(0, ge=0)
    depth_val: int = Field(0, ge=0)
    flow_val: int = Field(0, ge=0)
    rgb_pretrain: int = Field(0, ge=0)
    rgb_pretrain_test: int = Field(0, ge=0)

    def items(self) -> list[tuple[str, int]]:
        """(split, count) of the splits with frames, in :data:`SPLIT_KINDS` order."""
        return [(name, n) for name in SPLIT_KINDS if (n := getattr(self, name))]


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
    label_space: Literal["shape", "shape_look"] = Field(
        "shape", description="what labels name: the shape class, or shape and look (see LABEL_SPACES)")

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

    def label_names(self) -> list[str]:
        """The label of every class in the label space, in class order (the manifest header's classes)."""
        if self.label_space == "shape":
            return list(self.classes)
        return [look_label(shape, look) for shape in self.classes for look in SHAPE_CLASSES]

    def object_label(self, shape: str | None, look: str | None) -> str | None:
        """An object's label in the label space (None for clutter)."""
        if shape is None or self.label_space == "shape":
            return shape
        return look_label(shape, look or shape)

    def intrinsics(self) -> Intrinsics:
        """The camera of every frame: square pixels, principal point at the image centre (0-based)."""
        f = self.focal_ratio * self.width
        return Intrinsics(
            fx=f, fy=f, cx=(self.width - 1) / 2, cy=(self.height - 1) / 2, width=self.width, height=self.height
        )

    @classmethod
    def profile(cls, name: str) -> SynthConfig:
        """A named profile: ``tiny`` (unit tests), ``quick`` (the demo, about a minute on 2 cores), ``full``; and
        ``pretrain-tiny`` / ``pretrain-quick`` / ``pretrain-full``, the separate labelled RGB renders of the
        ImageNet-like teacher at the same frame sizes.

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
                   "depth_test": 3, "flow_test": 3, "depth_val": 2, "flow_val": 2},
    },
    "quick": {
        "height": 96, "width": 128,
        "splits": {"rgb_train": 1000, "depth_transfer": 1000, "flow_transfer": 800, "depth_train": 30,
                   "flow_train": 30, "depth_test": 250, "flow_test": 250, "depth_val": 100, "flow_val": 100},
    },
    "full": {
        "height": 240, "width": 320,
        "splits": {"rgb_train": 5000, "depth_transfer": 5000, "flow_transfer": 4000, "depth_train": 300,
                   "flow_train": 300, "depth_test": 1000, "flow_test": 1000, "depth_val": 300,
                   "flow_val": 300},
    },
}
# The demo's paper profile: the quick frames (the same (split, index) renders the same frame), more labelled ones.
PROFILES["paper"] = {**PROFILES["quick"], "splits": {**PROFILES["quick"]["splits"], "depth_train": 100,
                                                     "flow_train": 100}}

# The ImageNet-like teacher's data: other renders than any detection split (own split names, so own scenes), a
# broader label space (shape x look, 36 labels) with the look drawn independently of the shape (a shared-appearance
# probability of 5/6 makes each of the 6 looks equally likely), RGB only.
_PRETRAIN = {"label_space": "shape_look", "shared_appearance_prob": 5 / 6}
PROFILES |= {
    "pretrain-tiny": {**_PRETRAIN, "height": 64, "width": 80, "splits": {"rgb_pretrain": 12, "rgb_pretrain_test": 4}},
    "pretrain-quick": {**_PRETRAIN, "height": 96, "width": 128,
                       "splits": {"rgb_pretrain": 4000, "rgb_pretrain_test": 500}},
    "pretrain-full": {**_PRETRAIN, "height": 240, "width": 320,
                      "splits": {"rgb_pretrain": 20000, "rgb_pretrain_test": 2000}},
}
"""Profile name -> SynthConfig fields (anything not given takes its default)."""
