"""Video importer: a small MJPG video written here and a frame folder of real MPI Sintel frames.

Sintel frames: ../shared/data/flow_pairs/sintel_{0,1}.png (MPI Sintel, CC BY 3.0, via princeton-vl/RAFT).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.errors import ConfigError, DataError, ImageReadError
from shared.imageio import read_rgb, write_image
from shared.manifest import read_manifest
from xmodal_data.importers.video import fit_max_side, import_video, list_frames, pair_starts, sanitise_stem

H, W, SIDE, SPEED = 96, 128, 32, 2  # frame size, square side, pixels per frame to the right


def _texture(shape, seed):
    noise = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 1.5)


def write_video(path, n_frames=12):
    """MJPG .avi of a textured square moving SPEED px/frame right over a static textured background."""
    background, square = _texture((H, W, 3), 0) // 2, _texture((SIDE, SIDE, 3), 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = background.copy()
        x = 20 + SPEED * i
        frame[32 : 32 + SIDE, x : x + SIDE] = square
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "moving square.avi")


@pytest.fixture
def sintel_folder(sample_data, tmp_path):
    """Real frames, downscaled 4x to 256x109, named so natural order differs from string order."""
    folder = tmp_path / "sintel"
    for k, name in enumerate(("frame_9.png", "frame_10.png")):
        rgb = read_rgb(sample_data / "flow_pairs" / f"sintel_{k}.png")
        write_image(folder / name, cv2.resize(rgb, (256, 109), interpolation=cv2.INTER_AREA))
    return folder


def test_video_pairs_manifest_and_flow_direction(video, tmp_path):
    manifest = read_manifest(import_video(video, tmp_path, stride=3, progress=False))
    assert [f.id for f in manifest] == [f"video.moving_square.{t:06d}" for t in (0, 3, 6, 9)]
    assert manifest.splits() == {"flow_transfer": 4}
    assert all(f.intrinsics is None and f.objects is None and f.depth is None for f in manifest)
    for f in manifest:
        for path in (f.rgb, f.rgb_next, f.flow):
            assert read_rgb(manifest.path(path)).shape == (H, W, 3)
    frame = manifest["video.moving_square.000003"]
    flow = read_rgb(manifest.path(frame.flow)).astype(np.float64)
    x = 20 + SPEED * 3
    inside = (slice(32 + 8, 32 + SIDE - 8), slice(x + 8, x + SIDE - 8))
    u, v = (flow[(*inside, 0)] - 128) / 16, (flow[(*inside, 1)] - 128) / 16
    assert 1.0 < np.median(u) < 3.0  # rightward motion: u positive, about SPEED
    assert abs(np.median(v)) < 0.5
    still = (flow[:, :, 0][:, :12] - 128) / 16  # background left of the square does not move
    assert abs(np.median(still)) < 0.25


def test_step_and_max_side(video, tmp_path):
    manifest = read_manifest(import_video(video, tmp_path, dataset="clips", stride=5, step=3, max_side=64,
                                          split="train", progress=False))
    assert [f.id for f in manifest] == ["clips.moving_square.000000", "clips.moving_square.000005"]
    assert manifest.splits() == {"train": 2}
    assert read_rgb(manifest.path(manifest.frames[0].flow)).shape == (48, 64, 3)


def test_frame_folder_of_real_frames(sintel_folder, sample_data, tmp_path):
    manifest = read_manifest(import_video(sintel_folder, tmp_path / "out", dataset="sintel", stride=1,
                                          max_side=128, progress=False))
    assert [f.id for f in manifest] == ["sintel.sintel.000000"]
    frame = manifest.frames[0]
    expected = fit_max_side(read_rgb(sintel_folder / "frame_9.png"), 128)  # frame_9 comes before frame_10
    assert np.array_equal(read_rgb(manifest.path(frame.rgb)), expected)
    assert read_rgb(manifest.path(frame.rgb_next)).shape == read_rgb(manifest.path(frame.flow)).shape == (54, 128, 3)


def test_resume_skips_existing_outputs(video, tmp_path):
    import_video(video, tmp_path, stride=3, progress=False)
    flows = sorted((tmp_path / "flow").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in flows}
    flows[1].unlink()
    import_video(video, tmp_path, stride=3, progress=False)
    assert flows[1].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in flows if p != flows[1])
    with pytest.raises(ConfigError, match="differ in: max_side"):
        import_video(video, tmp_path, stride=3, max_side=64, progress=False)


def test_folder_errors_name_the_file(sintel_folder, tmp_path):
    corrupt = sintel_folder / "frame_10.png"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"frame_10\.png is empty, truncated or not a decodable image"):
        import_video(sintel_folder, tmp_path / "a", stride=1, progress=False)
    write_image(corrupt, np.zeros((50, 60, 3), np.uint8))
    with pytest.raises(DataError, match=r"frame .*frame_10.png is 50x60 but .*frame_9.png is 109x256"):
        import_video(sintel_folder, tmp_path / "b", stride=1, progress=False)
    corrupt.unlink()
    with pytest.raises(DataError, match=r"sintel has 1 frames; a pair needs at least 2"):
        import_video(sintel_folder, tmp_path / "c", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    with pytest.raises(DataError, match=r"frame folder .*empty holds no image files"):
        import_video(empty, tmp_path / "d", progress=False)


def test_video_errors_name_the_path(video, tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(DataError, match=r"junk\.avi"):
        import_video(junk, tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4 does not exist"):
        import_video(tmp_path / "missing.mp4", tmp_path / "b", progress=False)
    short = write_video(tmp_path / "short.avi", n_frames=1)
    with pytest.raises(DataError, match=r"short\.avi has 1 decodable frames; a pair needs at least 2"):
        import_video(short, tmp_path / "c", progress=False)


def test_several_sources_and_settings_checks(video, sintel_folder, tmp_path):
    manifest = read_manifest(import_video([video, sintel_folder], tmp_path / "both", stride=6, max_side=128,
                                          progress=False))
    assert [f.id for f in manifest] == ["video.moving_square.000000", "video.moving_square.000006",
                                        "video.sintel.000000"]
    clash = tmp_path / "moving square"
    clash.mkdir()
    with pytest.raises(ConfigError, match="both give the clip name 'moving_square'"):
        import_video([video, clash], tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="split 'Flow Transfer'"):
        import_video(video, tmp_path / "x", split="Flow Transfer", progress=False)
    with pytest.raises(ConfigError, match="stride and step must be >= 1"):
        import_video(video, tmp_path / "x", stride=0, progress=False)
    with pytest.raises(ConfigError, match="unknown flow method 'tvl1'"):
        import_video(video, tmp_path / "x", flow_method="tvl1", progress=False)


def test_pure_helpers(tmp_path):
    assert pair_starts(12, 3, 1) == [0, 3, 6, 9]
    assert pair_starts(10, 3, 1) == [0, 3, 6]  # 9 has no frame 10
    assert pair_starts(1, 1, 1) == []
    assert sanitise_stem("my clip (1)") == "my_clip_1_"
    assert sanitise_stem("__.hidden") == "hidden"
    assert sanitise_stem("日本") == "clip"
    assert fit_max_side(np.zeros((40, 20, 3), np.uint8), 10).shape == (10, 5, 3)
    assert fit_max_side(np.zeros((4, 2, 3), np.uint8), 10).shape == (4, 2, 3)  # never enlarged
    for name in ("b10.png", "b9.jpg", "a.txt", "B1.PNG"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["B1.PNG", "b9.jpg", "b10.png"]
