"""The NYU toolbox port against hand-computed values and literal, loop-by-loop transliterations of the .m files.

The references below follow PrincetonVision/SUN3Dsfm ``lib/nyu/undistort.m`` and ``project_depth_map.m``
statement by statement (MATLAB column-major linear indices, the z-buffer's sort-then-write loop), in
float64, so they share no code with the vectorised port.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shared.camera import Intrinsics
from shared.errors import ConfigError
from tests.xmodal_data.fixtures_real_layouts import kinect_scene_frames
from xmodal_data.importers.nyu_toolbox import (
    NYU_CALIBRATION,
    NyuCalibration,
    depth_rel2depth_abs,
    matlab_round,
    project_depth_map,
    read_calibration,
    undistort,
)

TINY = NYU_CALIBRATION.model_copy(update={  # 40x30 with the real distortion, rotation and translation
    "width": 40, "height": 30,
    **{k: getattr(NYU_CALIBRATION, k) / 16 for k in ("fx_rgb", "fy_rgb", "cx_rgb", "cy_rgb", "fx_d", "fy_d",
                                                      "cx_d", "cy_d")},
})


def _distort(x, y, k):
    r2 = x * x + y * y
    cdist = 1 + k[0] * r2 + k[1] * r2**2 + k[4] * r2**3
    return (x * cdist + k[2] * 2 * x * y + k[3] * (r2 + 2 * x * x),
            y * cdist + k[2] * (r2 + 2 * y * y) + k[3] * 2 * x * y)


def ref_undistort(image, fc, cc, kc):
    """undistort.m / rect: one pixel at a time, MATLAB linear indices (column-major, 1-based)."""
    nr, nc = image.shape
    flat = np.asarray(image, dtype=np.float64).ravel(order="F")
    out = np.full(nr * nc, 255.0)
    kinv = np.linalg.inv(np.array([[fc[0], 0, cc[0]], [0, fc[1], cc[1]], [0, 0, 1.0]]))
    for px in range(1, nc + 1):
        for py in range(1, nr + 1):
            ray = kinv @ np.array([px - 1.0, py - 1.0, 1.0])
            xd, yd = _distort(ray[0] / ray[2], ray[1] / ray[2], kc)
            px2, py2 = fc[0] * xd + cc[0], fc[1] * yd + cc[1]
            px0, py0 = math.floor(px2), math.floor(py2)
            if not (0 <= px0 <= nc - 2 and 0 <= py0 <= nr - 2):
                continue
            ax, ay = px2 - px0, py2 - py0
            lu, ru = px0 * nr + py0 + 1, (px0 + 1) * nr + py0 + 1
            ld, rd = px0 * nr + (py0 + 1) + 1, (px0 + 1) * nr + (py0 + 1) + 1
            out[(px - 1) * nr + py - 1] = ((1 - ay) * (1 - ax) * flat[lu - 1] + (1 - ay) * ax * flat[ru - 1]
                                           + ay * (1 - ax) * flat[ld - 1] + ay * ax * flat[rd - 1])
    return out.reshape((nr, nc), order="F")


def _cam(c, which):
    return ((getattr(c, f"fx_{which}"), getattr(c, f"fy_{which}")),
            (getattr(c, f"cx_{which}"), getattr(c, f"cy_{which}")), getattr(c, f"k_{which}"))


def ref_project_depth_map(img_depth, rgb, c):
    """project_depth_map.m with its helpers, in MATLAB order."""
    h, w = img_depth.shape
    rgb_u = np.stack([ref_undistort(rgb[..., i], *_cam(c, "rgb")) for i in range(3)], axis=-1)
    rgb_u = np.clip(np.sign(rgb_u) * np.floor(np.abs(rgb_u) + 0.5), 0, 255).astype(np.uint8)
    noise = ref_undistort(255.0 * (img_depth == img_depth.max()), *_cam(c, "d")) > 0
    d = ref_undistort(img_depth.astype(np.float64), *_cam(c, "d"))
    d[d < 600] = 2047
    d[noise] = 2047
    depth2 = 351.3 / (1092.5 - d)
    depth2[depth2 > 10] = 10
    depth2[depth2 < 0] = 0
    rot = np.linalg.inv((-np.array(c.rotation)).reshape(3, 3, order="F").T)
    t = np.array([c.t_x, c.t_z, c.t_y])
    xs, ys, zs = [], [], []
    for col in range(1, w + 1):  # X(:) is column-major
        for row in range(1, h + 1):
            z = depth2[row - 1, col - 1]
            p = rot @ np.array([(col - c.cx_d) * z / c.fx_d, (row - c.cy_d) * z / c.fy_d, z]) + t
            with np.errstate(divide="ignore", invalid="ignore"):
                xs.append(p[0] * c.fx_rgb / p[2] + c.cx_rgb)
                ys.append(p[1] * c.fy_rgb / p[2] + c.cy_rgb)
            zs.append(z)
    xp, yp = (np.sign(v) * np.floor(np.abs(v) + 0.5) for v in (np.array(xs), np.array(ys)))
    good = np.flatnonzero((xp > 0) & (xp < w) & (yp > 0) & (yp < h))
    order = np.argsort(-np.array(zs)[good], kind="stable")  # MATLAB's sort is stable
    out = np.zeros((h, w))
    for i in order:
        out[int(yp[good[i]]) - 1, int(xp[good[i]]) - 1] = zs[good[i]]
    out[out > 10] = 10
    return out, rgb_u


def test_depth_rel2depth_abs_against_hand_computed_values():
    raw = np.array([[0, 600, 1000, 1057], [1058, 1092, 1093, 2047]], dtype=np.uint16)
    expected = [[351.3 / 1092.5, 351.3 / 492.5, 351.3 / 92.5, 351.3 / 35.5], [10.0, 10.0, 0.0, 0.0]]
    assert np.allclose(depth_rel2depth_abs(raw), expected, rtol=0, atol=1e-12)
    assert depth_rel2depth_abs(raw)[0, 2] == pytest.approx(3.797837837837838, abs=1e-12)


def test_matlab_round_goes_half_away_from_zero():
    assert matlab_round(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999])).tolist() == [1, 2, 3, -1, -3, 0]


def test_calibration_constants_and_conventions():
    c = NYU_CALIBRATION
    assert (c.fx_rgb, c.cx_d, c.k_rgb[4], c.t_x) == (518.85790117450188, 313.04475870804731, 0.49856986684705107,
                                                     0.025031875059141302)
    rot = c.rotation_matrix()
    assert np.allclose(rot, -np.eye(3), atol=6e-3) and np.allclose(rot @ rot.T, np.eye(3), atol=1e-8)
    # the toolbox's reshape is column-major and R = inv(R'): a rotation written as -Q(:)' comes back as Q
    q = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    assert np.allclose(c.model_copy(update={"rotation": tuple(-q.ravel(order="F"))}).rotation_matrix(), q)
    assert c.translation().tolist() == [c.t_x, c.t_z, c.t_y]
    assert c.rgb_intrinsics() == Intrinsics(fx=c.fx_rgb, fy=c.fy_rgb, cx=c.cx_rgb - 1, cy=c.cy_rgb - 1,
                                            width=640, height=480)


def test_read_calibration_overrides_some_fields(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"width": 160, "height": 120, "fx_rgb": 130.0}))
    cal = read_calibration(path)
    assert (cal.width, cal.height, cal.fx_rgb, cal.fy_rgb) == (160, 120, 130.0, NYU_CALIBRATION.fy_rgb)
    path.write_text(json.dumps({"fx": 1.0}))
    with pytest.raises(ConfigError, match=r"cal\.json: field 'fx': Extra inputs"):
        read_calibration(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="holds a list, expected a JSON object"):
        read_calibration(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        read_calibration(tmp_path / "nope.json")


def test_undistort_without_distortion_is_the_identity_but_the_last_row_and_column():
    exact = NyuCalibration(width=64, height=48, fx_d=64.0, fy_d=64.0, cx_d=32.0, cy_d=24.0, k_d=(0, 0, 0, 0, 0))
    image = np.random.default_rng(0).uniform(0, 2000, (48, 64))
    out = undistort(image, exact, "d")
    assert np.array_equal(out[:-1, :-1], image[:-1, :-1])
    assert (out[-1] == 255).all() and (out[:, -1] == 255).all()  # rect's good_points need a right/lower neighbour


@pytest.mark.parametrize("camera", ["rgb", "d"])
def test_undistort_matches_the_literal_rect(camera):
    image = np.random.default_rng(1).uniform(0, 255, (TINY.height, TINY.width))
    assert np.allclose(undistort(image, TINY, camera), ref_undistort(image, *_cam(TINY, camera)), rtol=0, atol=1e-9)


def test_project_depth_map_matches_the_literal_toolbox():
    raw, rgb = kinect_scene_frames(TINY.height, TINY.width, seed=3)
    raw[5:8, 20:24] = 550  # below 600 after undistortion: dropped
    depth, rgb_u = project_depth_map(raw, rgb, TINY)
    ref_depth, ref_rgb = ref_project_depth_map(raw, rgb, TINY)
    assert np.allclose(depth, ref_depth, rtol=0, atol=1e-12)
    assert np.array_equal(rgb_u, ref_rgb)
    assert 0.4 < (depth > 0).mean() < 0.95  # a real registration: most pixels land, some do not


def test_registration_with_an_identity_calibration_returns_the_input():
    cal = NyuCalibration(
        width=64, height=48, fx_rgb=64.0, fy_rgb=64.0, cx_rgb=32.0, cy_rgb=24.0, k_rgb=(0, 0, 0, 0, 0),
        fx_d=64.0, fy_d=64.0, cx_d=32.0, cy_d=24.0, k_d=(0, 0, 0, 0, 0),
        rotation=(-1, 0, 0, 0, -1, 0, 0, 0, -1), t_x=0.0, t_y=0.0, t_z=0.0,
    )
    assert np.array_equal(cal.rotation_matrix(), np.eye(3))
    raw = np.random.default_rng(2).integers(620, 1050, (48, 64)).astype(np.uint16)
    raw[10:14, 5:9] = 2047
    raw[30, 30] = 580
    depth, rgb_u = project_depth_map(raw, np.full((48, 64, 3), 90, np.uint8), cal)
    expected = depth_rel2depth_abs(raw, cal)
    expected[raw == 580] = 0  # < 600: "issues introduced by distortion"
    expected[-1, :] = expected[:, -1] = 0  # 1-based x, y must be < W, < H
    assert np.allclose(depth, expected, rtol=0, atol=1e-9)
    assert (rgb_u[:-1, :-1] == 90).all()


def test_registration_checks_sizes():
    with pytest.raises(ValueError, match=r"must be \(30, 40\)"):
        project_depth_map(np.zeros((31, 40), np.uint16), np.zeros((31, 40, 3), np.uint8), TINY)
