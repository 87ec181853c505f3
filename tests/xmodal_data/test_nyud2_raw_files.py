"""NYUD2 raw scene files: names, the toolbox's sync against brute force and its pointer walk, sampling, PGM/PPM."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.errors import DataError, ImageReadError
from tests.xmodal_data.fixtures_real_layouts import (
    kinect_name,
    write_depth_pgm,
    write_nyud2_raw_scene,
    write_rgb_ppm,
)
from xmodal_data.importers.nyud2_raw_files import (
    check_netpbm,
    list_scene,
    nearest_later,
    read_depth_pgm,
    read_rgb_ppm,
    sample_every,
)


def brute_force_nearest(times, candidates):
    """Nearest candidate by |difference| (float64, as MATLAB's), the latest index among the nearest."""
    out = []
    for t in times:
        diffs = [abs(t - c) for c in candidates]
        best = min(diffs)
        out.append(max(i for i, d in enumerate(diffs) if d == best))
    return out


def pointer_walk(times, candidates):
    """get_synched_frames.m's loop, transliterated (0-based jj)."""
    jj, out = 0, []
    for t in times:
        t_diff = abs(t - candidates[jj])
        while jj < len(candidates) - 1:
            tmp = abs(t - candidates[jj + 1])
            if tmp > t_diff:
                break
            t_diff, jj = tmp, jj + 1
        out.append(jj)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_sync_equals_brute_force_and_the_toolbox_walk(seed):
    rng = np.random.default_rng(seed)
    base = 1315166485.0
    # quarter-second grids make exact ties; duplicates and real 6-decimal times too
    rgb = np.sort(np.r_[base + rng.integers(0, 40, 25) * 0.25, base + rng.uniform(0, 10, 30).round(6)])
    depth = np.sort(np.r_[base + rng.integers(-4, 44, 25) * 0.125, base + rng.uniform(-1, 11, 30).round(6)])
    got = nearest_later(depth, rgb).tolist()
    assert got == brute_force_nearest(depth.tolist(), rgb.tolist()) == pointer_walk(depth.tolist(), rgb.tolist())


def test_sync_ties_go_to_the_later_frame():
    assert nearest_later(np.array([1.0, 1.5, 2.5]), np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [0, 2, 3]
    assert nearest_later(np.array([0.0, 9.0]), np.array([1.0, 1.0, 3.0])).tolist() == [1, 2]


def test_sample_every():
    times = np.array([0.0, 0.3, 0.6, 0.9, 1.0, 1.2, 2.05, 2.1, 3.0, 3.04])
    assert sample_every(times, 1.0).tolist() == [0, 4, 6]  # 3.0 is 0.95 s after 2.05
    assert sample_every(times, 0.5).tolist() == [0, 2, 5, 6, 8]
    with pytest.raises(ValueError, match="every_s must be > 0"):
        sample_every(times, 0)


def test_depth_pgm_is_little_endian_and_cv2_would_swap_it(tmp_path):
    raw = np.array([[800, 2047, 0], [1, 1092, 255]], dtype=np.uint16)
    path = write_depth_pgm(tmp_path / kinect_name("d", 1315166485.5, 7), raw)
    assert path.read_bytes()[:12] == b"P5 3 2 65535" and path.read_bytes()[13:15] == b"\x20\x03"  # 800 LE
    assert np.array_equal(read_depth_pgm(path), raw)
    swapped = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert swapped[0, 0] == 8195 and swapped[0, 1] == 65287  # why the importer does not use cv2
    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    assert np.array_equal(read_rgb_ppm(write_rgb_ppm(tmp_path / "r-1.000000-1.ppm", rgb)), rgb)


def test_netpbm_errors_name_the_file(tmp_path):
    path = write_depth_pgm(tmp_path / "d-1.000000-1.pgm", np.full((4, 5), 900, np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ImageReadError, match=r"d-1\.000000-1\.pgm is truncated: 37 payload bytes .* expected 40"):
        read_depth_pgm(path)
    path.write_bytes(data + b"\0\0")
    with pytest.raises(ImageReadError, match="followed by extra bytes"):
        read_depth_pgm(path)
    path.write_bytes(data[:13] + np.full(20, 900, ">u2").tobytes())  # big-endian payload
    with pytest.raises(DataError, match=r"values up to 33795 read little-endian.*big-endian"):
        read_depth_pgm(path)
    path.write_bytes(b"P5 5 4 255\n" + bytes(20))
    with pytest.raises(DataError, match="maxval 255 is 8-bit"):
        read_depth_pgm(path)
    path.write_bytes(b"P6 5 4 65535\n" + bytes(120))
    with pytest.raises(DataError, match="starts with b'P6', expected the netpbm magic b'P5'"):
        read_depth_pgm(path)
    path.write_bytes(b"P5 5 x 65535\n")
    with pytest.raises(DataError, match="malformed P5 header"):
        read_depth_pgm(path)
    path.write_bytes(b"P5\n# a comment\n5 4\n65535\n" + bytes(40))
    assert check_netpbm(path, b"P5", 1) == (5, 4, 65535, 25)
    with pytest.raises(ImageReadError, match=r"frame .*missing\.ppm does not exist"):
        read_rgb_ppm(tmp_path / "missing.ppm")


def test_list_scene_sorts_classifies_and_ignores_other_files(tmp_path):
    names = write_nyud2_raw_scene(tmp_path / "bedroom_0001", [10.5, 10.25], [10.0, 10.75, 11.5], (4, 6), [10.1])
    (tmp_path / "bedroom_0001" / "readme.txt").write_text("not a frame")
    listing = list_scene(tmp_path / "bedroom_0001")
    assert listing.depth == tuple(sorted(names["d"])) and listing.rgb == tuple(names["r"])
    assert listing.depth_times.tolist() == [10.25, 10.5] and listing.rgb_times.dtype == np.float64


def test_list_scene_errors(tmp_path):
    scene = tmp_path / "kitchen_0001"
    write_nyud2_raw_scene(scene, [1.0, 2.0], [], (4, 6), [1.0])
    with pytest.raises(DataError, match=r"kitchen_0001 has no RGB \(r-\*\.ppm\) frames \(depth/RGB/accel: 2/0/1\)"):
        list_scene(scene)
    write_rgb_ppm(scene / "r-1.5-2.ppm.bak", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"r-1\.5-2\.ppm\.bak: expected a Kinect dump name r-<host seconds>"):
        list_scene(scene)
    (scene / "r-1.5-2.ppm.bak").unlink()
    write_rgb_ppm(scene / "r-1.000000-1.ppm", np.zeros((4, 6, 3), np.uint8))
    write_depth_pgm(scene / "d-10.000000-5.pgm", np.zeros((4, 6), np.uint16))  # sorts before d-2: not time order
    with pytest.raises(DataError, match=r"d-2\.000000-1033367\.pgm sorts after d-10\.000000-5\.pgm but is older"):
        list_scene(scene)
    with pytest.raises(FileNotFoundError, match=r"scene folder .*nope does not exist"):
        list_scene(tmp_path / "nope")
