"""Trunk specifications: the layouts of AlexNet-style trunks by name (torch-free, so settings can list them).

The modules themselves are :class:`shared.nets.trunks.AlexNetTrunk`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TRUNK_SPECS", "TrunkSpec", "trunk_spec"]


class TrunkSpec(BaseModel):
    """Shape of an AlexNet-style trunk. Widths are multiplied by ``width`` (rounded, at least 8)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    conv1_kernel: int = Field(ge=1)
    conv1_stride: int = Field(ge=1)
    conv1_padding: int = Field(ge=0)
    channels: tuple[int, int, int, int, int]
    batch_norm: bool = False
    ceil_mode: bool = True
    width: float = Field(default=1.0, gt=0)

    def widths(self) -> tuple[int, ...]:
        return tuple(max(8, round(c * self.width)) for c in self.channels)

    def with_(self, **changes: object) -> TrunkSpec:
        """A copy with some fields changed (validated)."""
        return TrunkSpec.model_validate({**self.model_dump(), **changes})


TRUNK_SPECS: dict[str, TrunkSpec] = {
    # CaffeNet / the paper's student: pool5 stride 32, conv5 stride 16.
    "alexnet": TrunkSpec(
        name="alexnet", conv1_kernel=11, conv1_stride=4, conv1_padding=0, channels=(96, 256, 384, 384, 256)
    ),
    # CPU-sized variant for the synthetic set (96x128 frames -> pool5 6x8): same layout, stride 16 at pool5.
    "alexnet-small": TrunkSpec(
        name="alexnet-small", conv1_kernel=5, conv1_stride=2, conv1_padding=2,
        channels=(32, 64, 96, 96, 64), batch_norm=True,
    ),
}


def trunk_spec(name: str, **overrides: object) -> TrunkSpec:
    """Look up a named spec and apply overrides (e.g. ``width=0.5``, ``conv1_padding=7``).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in TRUNK_SPECS:
        raise ValueError(f"unknown trunk {name!r}; known: {sorted(TRUNK_SPECS)}")
    spec = TRUNK_SPECS[name]
    return spec.with_(**overrides) if overrides else spec
