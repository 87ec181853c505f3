"""JHMDB importer on frames, puppet masks (scipy savemat, part_mask H x W x T) and split files in the real layout."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError, DataError
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from tests.xmodal_data.fixtures_real_layouts import moving_square_frames, write_jhmdb_splits, write_jhmdb_video
from xmodal_data.cli import main
from xmodal_data.importers.jhmdb import (
    JHMDB_CLASSES,
    import_jhmdb,
    list_video_frames,
    mask_box,
    read_part_mask,
    read_split_file,
)

H, W = 60, 80
BRUSH = "April_09_brush_hair_u_nm_np1_ba_goo_0"
WAVE = "Wave_hello_(1)!_wave_h_cm_np1_fr_med_0"


def _masks(n, box_of):
    masks = np.zeros((H, W, n), np.uint8)
    for t in range(n):
        if (b := box_of(t)) is not None:
            x1, y1, x2, y2 = b
            masks[y1:y2, x1:x2, t] = 1 + t % 5  # body-part ids
            masks[y1, x1, t] = 0  # a missing corner pixel leaves the tight box as it is
    return masks


def _brush_box(t):
    return (10 + 2 * t, 15, 40 + 2 * t, 55)


@pytest.fixture(scope="module")
def jhmdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("JHMDB")
    write_jhmdb_video(root, "brush_hair", BRUSH, moving_square_frames(6, H, W, speed=2), _masks(6, _brush_box))
    # a video with fewer masks than frames, and an empty mask on frame 2
    write_jhmdb_video(root, "wave", WAVE, moving_square_frames(7, H, W, speed=1, seed=1),
                      _masks(4, lambda t: None if t == 1 else (5, 5, 30, 50)))
    write_jhmdb_video(root, "wave", "other_wave", moving_square_frames(3, H, W, seed=2),
                      _masks(3, lambda t: (0, 0, W, H)))
    for k, (brush, wave) in enumerate([(1, 2), (2, 1), (1, 1)], start=1):
        write_jhmdb_splits(root, "brush_hair", {BRUSH: brush}, k, crlf=True)
        write_jhmdb_splits(root, "wave", {WAVE: wave, "other_wave": 0 if k == 3 else 1}, k)
        for action in JHMDB_CLASSES:
            if action not in ("brush_hair", "wave"):
                write_jhmdb_splits(root, action, {}, k)
    return root


def _boxes(frame):
    return [(o.label, tuple(int(v) for v in o.box)) for o in frame.objects]


def test_split_1_frames_boxes_and_flow(jhmdb, tmp_path):
    manifest = read_manifest(import_jhmdb(jhmdb, 1, tmp_path, workers=1, progress=False))
    assert manifest.classes == list(JHMDB_CLASSES) and manifest.header.dataset == "jhmdb"
    assert manifest.splits() == {"flow_train": 5 + 2, "flow_test": 6}  # the last frame has no t+1
    brush = [f for f in manifest if f.id.startswith("jhmdb.brush_hair.")]
    assert [f.id for f in brush] == [f"jhmdb.brush_hair.{BRUSH}.{t:05d}" for t in range(1, 6)]
    for t, f in enumerate(brush):
        assert _boxes(f) == [("brush_hair", _brush_box(t))] and f.split == "flow_train"
        assert f.rgb == str(jhmdb.resolve() / "Rename_Images" / "brush_hair" / BRUSH / f"{t + 1:05d}.png")
        assert f.rgb_next.endswith(f"{t + 2:05d}.png")
        assert read_rgb(manifest.path(f.flow)).shape == (H, W, 3)
    wave = [f for f in manifest if f.id.startswith("jhmdb.wave.Wave_")]
    assert [f.id for f in wave] == [f"jhmdb.wave.Wave_hello__1__wave_h_cm_np1_fr_med_0.{t:05d}" for t in range(1, 7)]
    assert [_boxes(f) for f in wave] == [[("wave", (5, 5, 30, 50))], [], *[[("wave", (5, 5, 30, 50))]] * 4]
    assert {f.split for f in wave} == {"flow_test"}  # frames 5, 6 reuse the last (4th) mask
    assert manifest.path(wave[0].flow) == tmp_path / "flow" / "wave" / WAVE / "00001.png"
    flow = read_rgb(manifest.path(brush[2].flow)).astype(np.float64)
    assert 1.0 < np.median((flow[24:36, 18:30, 0] - 128) / 16) < 3.0  # the square moves 2 px right


def test_the_three_splits_share_one_folder(jhmdb, tmp_path):
    import_jhmdb(jhmdb, 1, tmp_path, workers=1, progress=False)
    flows = sorted((tmp_path / "flow").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in flows}
    second = read_manifest(import_jhmdb(jhmdb, 2, tmp_path, workers=2, progress=False))
    third = read_manifest(import_jhmdb(jhmdb, 3, tmp_path, workers=1, progress=False))
    assert all(p.stat().st_mtime_ns == stamps[p] for p in flows)  # computed once
    assert second.splits() == {"flow_test": 5, "flow_train": 8} and third.splits() == {"flow_train": 11}
    assert (tmp_path / "manifest_split1.jsonl").is_file() and len(third) == 11  # other_wave is 0 in split 3
    with pytest.raises(ConfigError, match="differ in: flow_method"):
        import_jhmdb(jhmdb, 1, tmp_path, flow_method="farneback", progress=False)
    with pytest.raises(ConfigError, match="splits 1, 2 and 3"):
        import_jhmdb(jhmdb, 4, tmp_path)


def test_a_mask_of_the_wrong_size_fails_naming_it_and_writes_nothing(jhmdb, tmp_path):
    write_jhmdb_video(jhmdb, "wave", "bad_mask", moving_square_frames(3, H, W), np.ones((W, H, 3), np.uint8))
    split = jhmdb / "splits" / "wave_test_split1.txt"
    original = split.read_bytes()
    split.write_bytes(original + b"bad_mask.avi 1 \n")
    try:
        with pytest.raises(DataError, match=r"bad_mask/puppet_mask\.mat: part_mask is 80x60x3 but the frames are "
                                            r"60x80: expected 60x80xT \(transposed\?\)"):
            import_jhmdb(jhmdb, 1, tmp_path / "out", workers=1, progress=False)
        assert not (tmp_path / "out" / "flow" / "wave" / "bad_mask").exists()
        assert not (tmp_path / "out" / "manifest_split1.jsonl").exists()
    finally:
        split.write_bytes(original)


def test_input_errors(tmp_path):
    frames = moving_square_frames(3, H, W)
    folder, mask = write_jhmdb_video(tmp_path, "run", "v1", frames, None)
    with pytest.raises(FileNotFoundError, match=r"puppet_mask/run/v1/puppet_mask\.mat does not exist"):
        read_part_mask(mask, H, W)
    import scipy.io

    mask.parent.mkdir(parents=True)
    scipy.io.savemat(mask, {"mask": np.ones((H, W, 3))})
    with pytest.raises(DataError, match=r"has no variable 'part_mask' \(found \['mask'\]\)"):
        read_part_mask(mask, H, W)
    scipy.io.savemat(mask, {"part_mask": np.ones((H, W), np.uint8)})  # MATLAB saves H x W x 1 as H x W
    assert read_part_mask(mask, H, W).shape == (H, W, 1)
    (folder / "00002.png").unlink()
    with pytest.raises(DataError, match=r"frame .*run/v1/00002\.png is missing"):
        list_video_frames(folder)
    with pytest.raises(DataError, match=r"frame folder .*nope does not exist"):
        list_video_frames(tmp_path / "nope")
    split = tmp_path / "split.txt"
    split.write_text("v1.avi 1\nv2.avi 3\n")
    with pytest.raises(DataError, match=r"split\.txt:2: expected '<video>\.avi <1 train \| 2 test>'"):
        read_split_file(split)
    split.write_bytes(b"v1.avi 1 \r\nv2.avi 2 \r\nv3.avi 0 \r\n\r\n")
    assert read_split_file(split) == [("v1", 1), ("v2", 2)]
    with pytest.raises(FileNotFoundError, match=r"JHMDB split file .*brush_hair_test_split1\.txt does not exist"):
        import_jhmdb(tmp_path, 1, tmp_path / "out", progress=False)


def test_mask_box():
    mask = np.zeros((5, 7), bool)
    assert mask_box(mask) is None
    mask[1, 2] = mask[3, 5] = True
    assert mask_box(mask) == (2.0, 1.0, 6.0, 4.0)  # x2/y2 exclusive


def test_cli(jhmdb, tmp_path, capsys):
    assert main(["jhmdb", "--root", str(jhmdb), "--split", "2", "--out", str(tmp_path), "--workers", "1",
                 "--no-progress"]) == 0
    assert read_manifest(tmp_path / "manifest_split2.jsonl").splits() == {"flow_test": 5, "flow_train": 8}
    assert main(["jhmdb", "--root", str(tmp_path / "none"), "--split", "1", "--out", str(tmp_path)]) == 2
    assert "JHMDB root" in capsys.readouterr().err
