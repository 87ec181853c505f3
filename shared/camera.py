"""Pinhole camera intrinsics, with the pixel convention stated once.

Convention: 0-based pixel centres, as in OpenCV: pixel column ``u`` (0..width-1) back-projects to
``X = (u - cx) * Z / fx``. MATLAB code (Gupta et al.'s HHA, the NYUD2 toolbox) uses 1-based pixels;
:meth:`Intrinsics.from_one_based` converts their numbers.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.errors import DataError

__all__ = ["NYUD2_KINECT", "Intrinsics"]


class Intrinsics(BaseModel):
    """Camera intrinsics of one image size (pixels; 0-based principal point)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fx: float = Field(gt=0, description="focal length along x, pixels")
    fy: float = Field(gt=0, description="focal length along y, pixels")
    cx: float = Field(description="principal point x, 0-based pixels")
    cy: float = Field(description="principal point y, 0-based pixels")
    width: int = Field(gt=0, description="image width, pixels")
    height: int = Field(gt=0, description="image height, pixels")

    @model_validator(mode="after")
    def _check(self) -> Intrinsics:
        for name in ("fx", "fy", "cx", "cy"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        # A principal point far outside the image means swapped or wrong numbers (e.g. cx/cy for another size).
        if not (-0.5 * self.width <= self.cx <= 1.5 * self.width):
            raise ValueError(f"cx={self.cx} is far outside an image of width {self.width}")
        if not (-0.5 * self.height <= self.cy <= 1.5 * self.height):
            raise ValueError(f"cy={self.cy} is far outside an image of height {self.height}")
        return self

    @classmethod
    def from_one_based(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> Intrinsics:
        """Build from MATLAB-style numbers whose principal point counts pixels from 1."""
        return cls(fx=fx, fy=fy, cx=cx - 1.0, cy=cy - 1.0, width=width, height=height)

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64, 0-based principal point)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def crop(self, top: int, left: int, height: int, width: int) -> Intrinsics:
        """Intrinsics of the sub-image starting at 0-based ``(top, left)``."""
        if top < 0 or left < 0 or top + height > self.height or left + width > self.width:
            raise ValueError(
                f"crop rows {top}..{top + height} cols {left}..{left + width} is outside "
                f"the {self.height}x{self.width} image"
            )
        return Intrinsics(fx=self.fx, fy=self.fy, cx=self.cx - left, cy=self.cy - top, width=width, height=height)

    def resize(self, height: int, width: int) -> Intrinsics:
        """Intrinsics after resizing the image to ``height x width`` (pixel-centre aligned, as cv2.resize)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )

    def check_image(self, shape: tuple[int, ...], what: str = "image") -> None:
        """Raise DataError (a ValueError) when an image of ``shape`` (H, W, ...) does not have this camera's size."""
        if tuple(shape[:2]) != (self.height, self.width):
            raise DataError(
                f"{what} is {shape[0]}x{shape[1]} (HxW) but the intrinsics are for "
                f"{self.height}x{self.width}: pass the camera of this image (cropped or resized?)"
            )


# NYUD2 Kinect v1 colour camera, 640x480 (numbers published 1-based; see ../shared/data/README.md).
NYUD2_KINECT = Intrinsics.from_one_based(
    fx=518.85790117450188, fy=519.46961112127485, cx=325.58244941119034, cy=253.73616633400465,
    width=640, height=480,
)
