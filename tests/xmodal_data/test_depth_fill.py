"""The colorization fill against a literal transliteration of fill_depth_colorization.m, a known solution and
NYU's own filled depth of a real frame.

Real frame: ../shared/data/nyud2_sample/gupta_demo_{rgb,rawdepth_mm,depth_mm}.png (NYU Depth V2 via
s-gupta/rcnn-depth demo-data): the labelled set's RGB, raw (projected) depth and the depth NYU filled with
this function, cropped to 425x560.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from shared.errors import DataError
from shared.imageio import read_depth_m, read_rgb
from xmodal_data.importers.depth_fill import fill_depth_colorization, rgb2gray


def ref_fill(rgb01, depth, alpha=1.0):
    """fill_depth_colorization.m statement by statement (column-major pixel numbering), dense solve."""
    noise = (depth == 0) | (depth == 10)
    max_depth = depth[~noise].max()
    d = np.minimum(depth / max_depth, 1)
    h, w = d.shape
    n = h * w
    inds = np.arange(n).reshape((h, w), order="F")
    grey = rgb01[..., 0] * 0.298936021293775 + rgb01[..., 1] * 0.587043074451121 + rgb01[..., 2] * 0.114020904255103
    a = np.zeros((n, n))
    abs_ndx = -1
    for j in range(w):
        for i in range(h):
            abs_ndx += 1
            cols, gvals = [], []
            for ii in range(max(0, i - 1), min(i + 1, h - 1) + 1):
                for jj in range(max(0, j - 1), min(j + 1, w - 1) + 1):
                    if ii == i and jj == j:
                        continue
                    cols.append(inds[ii, jj])
                    gvals.append(grey[ii, jj])
            cur = grey[i, j]
            window = np.array([*gvals, cur])
            c_var = np.mean((window - window.mean()) ** 2)
            csig = c_var * 0.6
            mgv = np.min((np.array(gvals) - cur) ** 2)
            if csig < -mgv / math.log(0.01):
                csig = -mgv / math.log(0.01)
            if csig < 0.000002:
                csig = 0.000002
            g = np.exp(-((np.array(gvals) - cur) ** 2) / csig)
            g /= g.sum()
            a[abs_ndx, cols] = -g
            a[abs_ndx, abs_ndx] = 1
    known = (~noise).ravel(order="F") * alpha
    x = np.linalg.solve(a + np.diag(known), known * d.ravel(order="F"))
    return x.reshape((h, w), order="F") * max_depth


def _frame(h, w, seed):
    rng = np.random.default_rng(seed)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (3, 3), 0.8)
    rows, cols = np.mgrid[0:h, 0:w]
    depth = 1.5 + 0.05 * rows + 0.02 * cols + 0.2 * (cols > w // 2)
    depth[rng.random((h, w)) < 0.2] = 0
    depth[1:3, 2:5] = 0
    depth[-1, -2:] = 10.0  # saturated far values are holes too
    return rgb, depth


@pytest.mark.parametrize("solver", ["direct", "iterative"])
@pytest.mark.parametrize("alpha", [1.0, 0.8])
def test_fill_matches_the_literal_toolbox(solver, alpha):
    rgb, depth = _frame(9, 11, seed=4)
    expected = ref_fill(rgb / 255.0, depth, alpha)
    tolerance = 1e-12 if solver == "direct" else 1e-8  # metres; the iterative solver stops at ~1e-9 steps
    assert np.abs(fill_depth_colorization(rgb, depth, alpha=alpha, solver=solver) - expected).max() < tolerance


def test_a_constant_depth_is_the_exact_solution_whatever_the_image():
    rgb = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    depth = np.full((40, 50), 2.5)
    depth[10:30, 5:25] = 0  # a large hole
    depth[np.random.default_rng(6).random((40, 50)) < 0.3] = 0
    for solver in ("direct", "iterative"):
        assert np.allclose(fill_depth_colorization(rgb, depth, solver=solver), 2.5, rtol=0, atol=1e-8)


def test_iterative_equals_direct_on_a_larger_frame():
    rgb, depth = _frame(120, 160, seed=7)
    direct = fill_depth_colorization(rgb, depth, solver="direct")
    assert np.abs(fill_depth_colorization(rgb, depth) - direct).max() < 1e-7  # metres


def test_fill_errors():
    rgb, depth = _frame(9, 11, seed=1)
    with pytest.raises(DataError, match="no measured depth pixel"):
        fill_depth_colorization(rgb, np.zeros_like(depth))
    with pytest.raises(ValueError, match="unknown fill solver 'cg'"):
        fill_depth_colorization(rgb, depth, solver="cg")
    with pytest.raises(ValueError, match="must be"):
        fill_depth_colorization(rgb[:, :5], depth)
    assert rgb2gray(np.ones((1, 1, 3)))[0, 0] == pytest.approx(1.0, abs=1e-14)


def test_fill_reproduces_nyus_filled_depth_of_a_real_frame(sample_data):
    folder = sample_data / "nyud2_sample"
    rgb = read_rgb(folder / "gupta_demo_rgb.png")
    raw = read_depth_m(folder / "gupta_demo_rawdepth_mm.png")
    nyu = read_depth_m(folder / "gupta_demo_depth_mm.png")
    filled = fill_depth_colorization(rgb, raw)
    error_mm = np.abs(filled - nyu) * 1000
    holes = raw == 0
    # NYU filled the full 640x480 frame (this is its 425x560 crop) and stored millimetres: measured 1.3 mm
    # mean (6.2 mm in the holes); a wrong weight or data term gives tens of millimetres.
    assert error_mm.mean() < 2.5 and error_mm[holes].mean() < 10
    assert error_mm[~holes].mean() < 2  # measured pixels are smoothed, not copied: as NYU's
    assert np.abs(filled[~holes] - raw[~holes]).mean() * 1000 > 1
