"""The identity of a teacher: everything that determines its features (torch-free, so the server stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["TeacherIdentity"]


class TeacherIdentity(BaseModel):
    """Everything that determines a teacher's features, recorded in the feature store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str
    layer: str = "pool5"
    weights: str
    weights_digest: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    out_channels: int

    def short_id(self) -> str:
        """A compact id for headers and logs: ``arch-layer-digest12``."""
        return f"{self.arch}-{self.layer}-{self.weights_digest[:12]}"
