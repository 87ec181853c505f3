"""Flow computation, flow images and .flo files, on real video pairs and synthetic motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.errors import DataError, ImageReadError
from shared.flow_image import encode_flow_image, flip_flow, flip_flow_image
from shared.imageio import read_rgb, write_image
from xmodal_data.flow import (
    FLOW_METHODS,
    compute_flow,
    flow_image_from_pair,
    read_flo,
    read_flow_file,
    read_flow_png,
    write_flo,
    write_flow_png,
)

# Real consecutive frames (RAFT's demo images): DAVIS 1920x1080, KITTI 1242x375, MPI Sintel 1024x436.
# Downscaled so each flow takes a few tens of milliseconds.
PAIRS = {"davis": ("jpg", 0.25), "kitti": ("png", 0.5), "sintel": ("png", 0.5)}


def _pair(sample_data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    ext, scale = PAIRS[name]
    frames = (read_rgb(sample_data / "flow_pairs" / f"{name}_{i}.{ext}") for i in (0, 1))
    return tuple(cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in frames)


def _texture(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture: every patch has gradient in both directions, so flow is well posed."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width)).astype(np.float32)
    grey = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.dstack([grey] * 3)


def _photometric_error(rgb_t: np.ndarray, rgb_t1: np.ndarray, flow: np.ndarray | None, margin: int = 16) -> float:
    """Mean |grey_t - grey_t1 sampled at (x + u, y + v)| over the interior; flow None = no warp."""
    grey_t, grey_t1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in (rgb_t, rgb_t1))
    if flow is not None:
        ys, xs = np.indices(grey_t.shape, dtype=np.float32)
        grey_t1 = cv2.remap(
            grey_t1, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    inner = np.s_[margin:-margin, margin:-margin]
    return float(np.abs(grey_t - grey_t1)[inner].mean())


@pytest.mark.parametrize("method", FLOW_METHODS)
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_flow_on_real_pairs_explains_the_motion(sample_data: Path, name: str, method: str) -> None:
    rgb_t, rgb_t1 = _pair(sample_data, name)
    flow = compute_flow(rgb_t, rgb_t1, method)
    assert flow.shape == (*rgb_t.shape[:2], 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    before, after = _photometric_error(rgb_t, rgb_t1, None), _photometric_error(rgb_t, rgb_t1, flow)
    # Measured (DIS / Farneback): davis 14.0 -> 5.1 / 5.7, kitti 34.8 -> 13.0 / 22.8, sintel 28.9 -> 3.3 / 21.9.
    assert after < 0.8 * before, f"warping by the flow barely helps: {before:.2f} -> {after:.2f}"


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_known_shift_pins_sign_and_channel_order(method: str) -> None:
    img = _texture()
    # Content moves 3 px right and 2 px up: frame_t1[y, x] = frame_t[y + 2, x - 3].
    shifted = np.roll(img, shift=(-2, 3), axis=(0, 1))
    flow = compute_flow(img, shifted, method)[20:-20, 20:-20]
    np.testing.assert_allclose(np.median(flow, axis=(0, 1)), [3.0, -2.0], atol=0.05)
    assert np.mean(np.abs(flow - [3.0, -2.0]) < 0.25) > 0.99


def test_flipping_the_pair_mirrors_the_flow(sample_data: Path) -> None:
    rgb_t, rgb_t1 = _pair(sample_data, "davis")
    flow = compute_flow(rgb_t, rgb_t1)
    flow_of_flipped = compute_flow(rgb_t[:, ::-1], rgb_t1[:, ::-1])
    # DIS's patch grid is not mirror-symmetric, so the match is close, not exact (measured median 0.01 px).
    assert np.median(np.abs(flow_of_flipped - flip_flow(flow))) < 0.05
    moving = np.abs(flow[..., 0]) > 1.0
    assert moving.mean() > 0.05
    agree = np.sign(flow_of_flipped[..., 0][:, ::-1][moving]) == -np.sign(flow[..., 0][moving])
    assert agree.mean() > 0.95


def test_flip_flow_negates_u_and_mirrors() -> None:
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 0] = (1.5, -0.25)
    flipped = flip_flow(flow)
    np.testing.assert_array_equal(flipped[0, 2], [-1.5, -0.25])
    np.testing.assert_array_equal(flip_flow(flipped), flow)
    assert flow[0, 0, 0] == 1.5  # input untouched


def test_encode_hand_values() -> None:
    flow = np.array([[[1.0, 0.0], [-8.0, 0.0], [100.0, 0.0], [3.0, -4.0], [0.0, 0.0], [1 / 32, -1 / 32]]])
    img = encode_flow_image(flow)
    assert img.dtype == np.uint8 and img.shape == (1, 6, 3)
    np.testing.assert_array_equal(img[0, :, 0], [144, 0, 255, 176, 128, 128])  # u: 1->144, -8->0, 100->255
    np.testing.assert_array_equal(img[0, :, 1], [128, 128, 128, 64, 128, 128])  # v: -4 -> 64
    # magnitude: 1 -> 144, 8 -> 256 clipped, 5 -> 208, 0 -> 128, 0.0442 -> 128.7 -> 129
    np.testing.assert_array_equal(img[0, :, 2], [144, 255, 255, 208, 128, 129])


def test_flip_flow_image_equals_encoding_the_flipped_flow() -> None:
    rng = np.random.default_rng(1)
    # Cover saturation on both sides and exact rounding ties (multiples of 1/32 px).
    flow = np.concatenate(
        [rng.uniform(-12, 12, (64, 50, 2)), np.round(rng.uniform(-9, 9, (64, 50, 2)) * 32) / 32], axis=1
    )
    img = encode_flow_image(flow)
    flipped = flip_flow_image(img)
    expected = encode_flow_image(flip_flow(flow))
    np.testing.assert_array_equal(flipped[..., 1:], expected[..., 1:])
    # The one documented exception: u in (+7.906, +7.969) px is level 255 without saturating; the flip
    # maps 255 to 0, the direct encoding of -u is 1.
    differs = flipped[..., 0] != expected[..., 0]
    u_before = flow[:, ::-1, 0]  # u before the flip, at the flipped image's pixels
    band = (u_before > 7.90625) & (u_before < 7.96875)
    assert band.any()
    np.testing.assert_array_equal(differs, band)
    assert np.all(flipped[..., 0][band] == 0) and np.all(expected[..., 0][band] == 1)
    # Saturated ends swap.
    assert np.all(flipped[..., 0][:, ::-1][img[..., 0] == 0] == 255)
    assert np.all(flipped[..., 0][:, ::-1][img[..., 0] == 255] == 0)


def test_flo_round_trip(tmp_path: Path) -> None:
    flow = np.random.default_rng(2).normal(0, 5, (7, 11, 2)).astype(np.float32)
    path = write_flo(tmp_path / "sub" / "a.flo", flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == (7, 11, 2)
    np.testing.assert_array_equal(back, flow)
    raw = path.read_bytes()
    # Header laid out by hand: magic, width, height, then u,v of pixel (0, 0), (0, 1), ...
    assert np.frombuffer(raw[:4], "<f4")[0] == 202021.25
    assert tuple(np.frombuffer(raw[4:12], "<i4")) == (11, 7)
    np.testing.assert_array_equal(np.frombuffer(raw[12:20], "<f4"), flow[0, 0])
    np.testing.assert_array_equal(np.frombuffer(raw[20:28], "<f4"), flow[0, 1])
    assert [p.name for p in path.parent.iterdir()] == ["a.flo"]  # no temp file left behind


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b[:-4], "truncated"),
        (lambda b: b[:8], "fewer than the 12-byte"),
        (lambda b: b + b"\0", "extra bytes"),
        (lambda b: b"PIEX" + b[4:], "magic"),
        (lambda b: b[:4] + np.array([-1, 7], "<i4").tobytes() + b[12:], "corrupt"),
    ],
)
def test_corrupt_flo_names_the_file(tmp_path: Path, mutate, match: str) -> None:
    good = write_flo(tmp_path / "good.flo", np.zeros((7, 11, 2), np.float32))
    bad = tmp_path / "bad.flo"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(DataError, match=match) as info:
        read_flo(bad)
    assert "bad.flo" in str(info.value)


def test_flow_png_round_trip_in_the_kitti_layout(tmp_path: Path) -> None:
    flow = np.random.default_rng(3).normal(0, 20, (7, 11, 2)).astype(np.float32)
    valid = np.random.default_rng(4).random((7, 11)) > 0.2
    path = write_flow_png(tmp_path / "sub" / "a.png", flow, valid)
    back, known = read_flow_png(path)
    assert back.dtype == np.float32 and np.array_equal(known, valid)
    assert np.abs(back - flow)[valid].max() <= 1 / 128 + 1e-6 and (back[~valid] == 0).all()
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # B, G, R = valid, v, u as KITTI's devkit reads them
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw[..., 2], np.rint(np.where(valid, flow[..., 0], 0) * 64 + 32768))
    np.testing.assert_array_equal(raw[..., 1], np.rint(np.where(valid, flow[..., 1], 0) * 64 + 32768))
    np.testing.assert_array_equal(raw[..., 0], valid)
    np.testing.assert_array_equal(read_flow_file(path), back)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]


def test_flow_png_rejects_what_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="512"):
        write_flow_png(tmp_path / "big.png", np.full((2, 2, 2), 600.0, np.float32))
    write_image(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="16-bit") as info:
        read_flow_png(tmp_path / "rgb.png")
    assert "rgb.png" in str(info.value)
    with pytest.raises(DataError, match=r"unknown format '\.npy'"):
        read_flow_file(tmp_path / "flow.npy")


def test_missing_flo_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_flo(tmp_path / "nope.flo")


def test_flow_image_from_pair(tmp_path: Path) -> None:
    img = _texture(120, 160)
    write_image(tmp_path / "t0.png", img)
    write_image(tmp_path / "t1.png", np.roll(img, shift=(-2, 3), axis=(0, 1)))
    flow_img = flow_image_from_pair(tmp_path / "t0.png", tmp_path / "t1.png")
    assert flow_img.shape == (120, 160, 3) and flow_img.dtype == np.uint8
    inner = flow_img[20:-20, 20:-20].reshape(-1, 3)
    np.testing.assert_array_equal(np.median(inner, axis=0), [176, 96, round(128 + 16 * np.hypot(3, 2))])


def test_flow_image_from_pair_size_mismatch_names_both_files(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", _texture(120, 160))
    write_image(tmp_path / "b.png", _texture(100, 160))
    with pytest.raises(DataError, match=r"a\.png is 120x160 but .*b\.png is 100x160"):
        flow_image_from_pair(tmp_path / "a.png", tmp_path / "b.png")
    with pytest.raises(ImageReadError):
        flow_image_from_pair(tmp_path / "a.png", tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("a", "b", "method", "match"),
    [
        (_texture(), _texture(), "raft", r"unknown flow method 'raft': expected one of 'dis', 'dis-fine', 'farneback'"),
        (_texture(), _texture(120, 160), "dis", "same shape"),
        (_texture().astype(np.float32), _texture().astype(np.float32), "dis", "uint8"),
        (_texture()[..., :2].copy(), _texture()[..., :2].copy(), "dis", r"\(H, W, 3\)"),
    ],
)
def test_compute_flow_bad_input(a: np.ndarray, b: np.ndarray, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_flow(a, b, method)


def test_encode_rejects_bad_flow() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        encode_flow_image(np.zeros((4, 4, 3)))
    with pytest.raises(DataError, match="NaN"):
        encode_flow_image(np.full((4, 4, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        flip_flow_image(np.zeros((4, 4, 3), np.float32))
