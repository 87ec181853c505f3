"""UCF101 importer on XviD clips and CRLF lists written in the real layout (fixtures_real_layouts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.errors import ConfigError, DataError
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from tests.xmodal_data.fixtures_real_layouts import moving_square_frames, write_ucf101_lists, write_ucf101_video
from xmodal_data.cli import main
from xmodal_data.importers.ucf101 import evenly_spaced_starts, import_ucf101, read_video_list

CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    """Three clips: 320x240 at 25 fps (40 and 31 frames, the HandStandPushups spelling) and 400x226 at 30 fps."""
    root = tmp_path_factory.mktemp("UCF101")
    videos = [
        write_ucf101_video(root, "ApplyEyeMakeup", 8, 1, moving_square_frames(40, 240, 320, speed=2)),
        write_ucf101_video(root, "HandstandPushups", 8, 1, moving_square_frames(31, 240, 320, speed=3, seed=1),
                           file_class="HandStandPushups"),
        write_ucf101_video(root, "YoYo", 25, 4, moving_square_frames(12, 226, 400, speed=2, seed=2), fps=30),
    ]
    test_video = write_ucf101_video(root, "YoYo", 1, 1, moving_square_frames(8, 240, 320))
    return root, write_ucf101_lists(root, CLASSES, videos, [test_video])


@pytest.fixture(scope="module")
def imported(ucf, tmp_path_factory):
    root, train_list = ucf
    out = tmp_path_factory.mktemp("out")
    return out, read_manifest(import_ucf101(root, train_list, out, workers=1, progress=False))


def test_evenly_spaced_starts():
    assert evenly_spaced_starts(40, 5) == [3, 11, 19, 27, 35]  # centres of 5 parts of starts 0..38
    assert evenly_spaced_starts(11, 5) == [1, 3, 5, 7, 9]
    assert evenly_spaced_starts(6, 5) == [0, 1, 2, 3, 4]  # every start when there are too few
    assert evenly_spaced_starts(3, 5) == [0, 1] and evenly_spaced_starts(1, 5) == []
    assert evenly_spaced_starts(101, 1) == [50]
    for n in range(2, 300):
        starts = evenly_spaced_starts(n, 5)
        assert starts == sorted(set(starts)) and starts[-1] <= n - 2 and len(starts) == min(5, n - 1)


def test_read_video_list_crlf_and_class_from_the_folder(ucf):
    _, train_list = ucf
    assert b"\r\n" in train_list.read_bytes()
    listed = read_video_list(train_list)
    assert [(v.path, v.label, v.line) for v in listed] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", 1),
        ("HandstandPushups/v_HandStandPushups_g08_c01.avi", "HandstandPushups", 2),
        ("YoYo/v_YoYo_g25_c04.avi", "YoYo", 3),
    ]
    assert [v.label for v in read_video_list(train_list.parent / "testlist01.txt")] == ["YoYo"]  # no index


def test_read_video_list_errors(tmp_path):
    (tmp_path / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 YoYo\r\n")
    path = tmp_path / "trainlist01.txt"
    path.write_bytes(b"YoYo/v_YoYo_g08_c01.avi 1\r\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:1: class index 1 is 'ApplyEyeMakeup' .* folder is 'YoYo'"):
        read_video_list(path)
    path.write_bytes(b"YoYo/v_YoYo_g08_c01.avi 2\r\n\r\nv_YoYo_g08_c02.avi 2\r\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:3: expected '<Class>/<file>\.avi \[<class index>\]'"):
        read_video_list(path)
    path.write_bytes(b"YoYo/v_YoYo_g08_c01.avi 2\nYoYo/v_YoYo_g08_c01.avi 2\n")
    with pytest.raises(DataError, match="listed again"):
        read_video_list(path)
    path.write_bytes(b"\r\n")
    with pytest.raises(DataError, match="lists no video"):
        read_video_list(path)


def test_pairs_frames_flow_and_markers(imported):
    out, manifest = imported
    starts = {"v_ApplyEyeMakeup_g08_c01": [3, 11, 19, 27, 35], "v_HandStandPushups_g08_c01": [3, 9, 15, 21, 27],
              "v_YoYo_g25_c04": [1, 3, 5, 7, 9]}
    assert [f.id for f in manifest] == [f"ucf101.{v}.{t:06d}" for v, ts in starts.items() for t in ts]
    assert manifest.splits() == {"flow_transfer": 15}
    assert all(f.objects is None and f.intrinsics is None for f in manifest)
    yoyo = manifest["ucf101.v_YoYo_g25_c04.000005"]
    assert yoyo.rgb == "rgb/YoYo/v_YoYo_g25_c04/000005.png"
    assert yoyo.rgb_next == "rgb_next/YoYo/v_YoYo_g25_c04/000005.png"
    for path in (yoyo.rgb, yoyo.rgb_next, yoyo.flow):
        assert read_rgb(manifest.path(path)).shape == (226, 400, 3)  # size per file, not assumed
    marker = json.loads((out / "videos" / "YoYo" / "v_YoYo_g25_c04.json").read_text())
    assert (marker["frames"], marker["fps"], marker["width"], marker["height"]) == (12, 30.0, 400, 226)
    # frames t and t+1 are consecutive: the square moves 3 px right (XviD is lossy: compare by motion)
    pushups = manifest["ucf101.v_HandStandPushups_g08_c01.000015"]
    flow = read_rgb(manifest.path(pushups.flow)).astype(np.float64)
    x = 40 + 3 * 15
    u = (flow[100:140, x + 10 : x + 70, 0] - 128) / 16
    assert 2.5 < np.median(u) < 3.5 and abs(np.median((flow[100:140, x + 10 : x + 70, 1] - 128) / 16)) < 0.5
    first, second = (read_rgb(manifest.path(p)).astype(np.int16) for p in (pushups.rgb, pushups.rgb_next))
    window = (slice(90, 150), slice(x + 6, x + 74))
    errors = [np.abs(first[:, : 320 - s] - second[:, s:])[window].mean() for s in range(7)]
    assert int(np.argmin(errors)) == 3  # rgb_next is frame t+1 (t+2 would be 6 px on)


def test_resume_uses_the_markers(ucf, imported):
    root, train_list = ucf
    out, manifest = imported
    files = sorted((out / "flow").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    files[0].unlink()
    again = read_manifest(import_ucf101(root, train_list, out, workers=2, progress=False))
    assert [f.id for f in again] == [f.id for f in manifest] and files[0].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files[1:])
    with pytest.raises(ConfigError, match="differ in: frames_per_video"):
        import_ucf101(root, train_list, out, frames_per_video=3, progress=False)


def _with_bad(ucf, tmp_path, content):
    root, train_list = ucf
    bad = root / "UCF-101" / "YoYo" / "v_YoYo_g09_c01.avi"
    bad.write_bytes(content)
    listing = tmp_path / "list" / "trainlist01.txt"
    listing.parent.mkdir()
    listing.write_bytes(train_list.read_bytes() + b"YoYo/v_YoYo_g09_c01.avi 3\r\n")
    (listing.parent / "classInd.txt").write_bytes((train_list.parent / "classInd.txt").read_bytes())
    return root, listing, bad


def test_an_undecodable_video_fails_naming_it_and_is_not_marked_done(ucf, tmp_path):
    root, listing, bad = _with_bad(ucf, tmp_path, b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(3000))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cannot open video .*v_YoYo_g09_c01\.avi.*--skip-bad"):
        import_ucf101(root, listing, out, workers=2, progress=False)
    assert not (out / "manifest.jsonl").exists() and not (out / "videos" / "YoYo" / "v_YoYo_g09_c01.json").exists()
    manifest = read_manifest(import_ucf101(root, listing, out, skip_bad=True, workers=1, progress=False))
    assert len(manifest) == 15 and "undecodable videos skipped" in manifest.header.description
    assert str(bad) in (out / "bad_videos.txt").read_text()
    bad.unlink()


def test_a_truncated_video_fails_naming_it(ucf, tmp_path):
    root, _ = ucf
    good = (root / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi").read_bytes()
    root, listing, bad = _with_bad(ucf, tmp_path, good[: len(good) // 3])
    with pytest.raises(DataError, match=r"v_YoYo_g09_c01\.avi: frame \d+ \(needed for a pair\) does not decode"):
        import_ucf101(root, listing, tmp_path / "out", workers=1, progress=False)
    bad.unlink()


def test_missing_videos_and_settings(ucf, tmp_path):
    root, train_list = ucf
    listing = tmp_path / "trainlist01.txt"
    listing.write_bytes(train_list.read_bytes() + b"YoYo/v_YoYo_g10_c01.avi\r\n")
    with pytest.raises(FileNotFoundError, match=r"1 of the 4 videos .*YoYo/v_YoYo_g10_c01\.avi \(line 4\)"):
        import_ucf101(root, listing, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="split 'Flow'"):
        import_ucf101(root, train_list, tmp_path / "out", split="Flow", progress=False)
    with pytest.raises(FileNotFoundError, match=r"UCF101 root .* does not exist"):
        import_ucf101(tmp_path / "nope", train_list, tmp_path / "out", progress=False)


def test_cli(ucf, tmp_path, capsys):
    root, train_list = ucf
    argv = ["ucf101", "--root", str(root / "UCF-101"), "--list", str(train_list), "--out", str(tmp_path / "o"),
            "--frames-per-video", "2", "--split", "flow_transfer", "--workers", "1", "--no-progress"]
    assert main(argv) == 0
    assert len(read_manifest(tmp_path / "o" / "manifest.jsonl")) == 6
    assert main([*argv[:3], "--list", str(tmp_path / "none.txt")]) == 2
    assert "none.txt does not exist" in capsys.readouterr().err
