import numpy as np
import pytest
from pydantic import ValidationError

from shared.camera import NYUD2_KINECT, Intrinsics


def test_one_based_conversion_matches_readme_numbers():
    # ../shared/data/README.md: cx=325.58244941119034 (1-based) for the 640x480 Kinect colour camera.
    assert NYUD2_KINECT.cx == pytest.approx(324.58244941119034)
    assert NYUD2_KINECT.cy == pytest.approx(252.73616633400465)


def test_crop_matches_gupta_crop_numbers():
    # README: for the 425x560 crop subtract 40 from cx and 45 from cy.
    c = NYUD2_KINECT.crop(top=45, left=40, height=425, width=560)
    assert (c.height, c.width) == (425, 560)
    assert c.cx + 1 == pytest.approx(285.58244941119034)
    assert c.cy + 1 == pytest.approx(208.73616633400465)


def test_crop_outside_image_fails():
    with pytest.raises(ValueError, match="outside"):
        NYUD2_KINECT.crop(top=400, left=0, height=100, width=10)


def test_resize_keeps_projection_consistent():
    # A 3-D point projects to the same relative position before and after resizing by 2.
    k = Intrinsics(fx=100, fy=100, cx=31.5, cy=23.5, width=64, height=48)
    k2 = k.resize(96, 128)
    X, Y, Z = 0.3, -0.2, 2.0
    u, v = k.fx * X / Z + k.cx, k.fy * Y / Z + k.cy
    u2, v2 = k2.fx * X / Z + k2.cx, k2.fy * Y / Z + k2.cy
    assert (u2 + 0.5) == pytest.approx(2 * (u + 0.5))
    assert (v2 + 0.5) == pytest.approx(2 * (v + 0.5))


def test_bad_intrinsics_rejected():
    with pytest.raises(ValidationError):
        Intrinsics(fx=-1, fy=1, cx=0, cy=0, width=10, height=10)
    with pytest.raises(ValidationError, match="far outside"):
        Intrinsics(fx=500, fy=500, cx=3000, cy=240, width=640, height=480)


def test_check_image_names_sizes():
    with pytest.raises(ValueError, match="425x560"):
        NYUD2_KINECT.check_image((425, 560))
    NYUD2_KINECT.check_image((480, 640))
    assert NYUD2_KINECT.matrix().shape == (3, 3) and np.isclose(NYUD2_KINECT.matrix()[0, 2], NYUD2_KINECT.cx)
