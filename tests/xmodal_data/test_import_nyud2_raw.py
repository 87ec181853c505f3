"""NYUD2 raw importer end to end on scene folders written in the real layout (fixtures_real_layouts).

Most scenes are 160x120 with the toolbox calibration scaled to that size (SMALL_CALIBRATION, passed like a
user's --calibration); one test runs a 640x480 frame through the default toolbox constants.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from shared.errors import ConfigError, DataError, ImageReadError
from shared.imageio import read_depth_m, read_depth_raw, read_rgb
from shared.manifest import read_manifest
from tests.xmodal_data.fixtures_real_layouts import (
    SMALL_CALIBRATION,
    write_labeled_scenes_mat,
    write_nyud2_raw_scene,
)
from tests.xmodal_data.test_nyud2_raw_files import brute_force_nearest
from xmodal_data.cli import main
from xmodal_data.hha import compute_hha
from xmodal_data.importers.depth_fill import fill_depth_colorization
from xmodal_data.importers.nyu_toolbox import project_depth_map
from xmodal_data.importers.nyud2_raw import import_nyud2_raw
from xmodal_data.importers.nyud2_raw_files import read_depth_pgm, read_rgb_ppm
from xmodal_data.importers.nyud2_scenes import SceneSplits, read_scene_splits, scene_splits_from_labeled

T0 = 1315166485.0
SPLITS = {"bedroom_0001": "train", "kitchen_0003": "val", "office_0002": "test",
          "living_room_0001": ["train", "val"]}


def _times(start, fps, seconds, jitter=0.0, seed=0):
    n = int(seconds * fps)
    noise = np.random.default_rng(seed).uniform(0, jitter, n)
    return [round(start + i / fps + noise[i], 6) for i in range(n)]


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory):
    """Four scenes (one inside a per-zip folder), a folder no split names, the splits file, the calibration."""
    root = tmp_path_factory.mktemp("nyud2_raw")
    for k, (scene, where) in enumerate([("bedroom_0001", "."), ("kitchen_0003", "kitchens"),
                                        ("office_0002", "."), ("living_room_0001", ".")]):
        start = T0 + 100 * k
        write_nyud2_raw_scene(root / where / scene, _times(start, 10, 2.5, 0.02, k), _times(start + 0.013, 12, 2.7),
                              accel_times=_times(start, 2, 2.5), seed=10 * k)
    (root / "notes_folder").mkdir()
    meta = tmp_path_factory.mktemp("meta")
    (meta / "splits.json").write_text(json.dumps(SPLITS))
    (meta / "calibration.json").write_text(SMALL_CALIBRATION.model_dump_json())
    return root, meta


@pytest.fixture(scope="module")
def imported(raw_root, tmp_path_factory):
    root, meta = raw_root
    out = tmp_path_factory.mktemp("out")
    manifest = import_nyud2_raw(root, out, read_scene_splits(meta / "splits.json"), calibration=SMALL_CALIBRATION,
                                workers=1, progress=False)
    return root, out, read_manifest(manifest)


def test_manifest_scenes_splits_and_sampling(imported):
    root, out, manifest = imported
    assert manifest.header.dataset == "nyud2_raw" and manifest.classes == []
    scenes = {f.id.split(".")[1] for f in manifest}
    assert scenes == {"bedroom_0001", "kitchen_0003", "living_room_0001"}  # never the test scene
    assert {f.id.split(".")[1]: f.split for f in manifest} == {
        "bedroom_0001": "train", "kitchen_0003": "val", "living_room_0001": "val"}  # train+val -> val
    assert all(f.intrinsics == SMALL_CALIBRATION.rgb_intrinsics() and f.objects is None for f in manifest)
    report = json.loads((out / "scenes.json").read_text())
    assert report["scenes_in_two_splits"] == {"living_room_0001": ["train", "val"]}
    assert report["unknown_folders"] == ["notes_folder"] and report["missing_scenes"] == []
    for scene, entry in report["scenes"].items():
        folder = root / ("kitchens" if scene == "kitchen_0003" else ".") / scene
        depth = sorted(p.name for p in folder.glob("d-*.pgm"))
        rgb = sorted(p.name for p in folder.glob("r-*.ppm"))
        times = [float(n.split("-")[1]) for n in depth]
        match = brute_force_nearest(times, [float(n.split("-")[1]) for n in rgb])
        taken = [0]
        for i, t in enumerate(times):  # one frame per second: each first frame >= 1 s after the last taken
            if t >= times[taken[-1]] + 1.0:
                taken.append(i)
        assert entry["depth_frames"] == 25 and entry["sampled"] == len(taken) == 3
        assert [p[:2] for p in entry["pairs"]] == [[depth[i], rgb[match[i]]] for i in taken]
        ids = [f.id for f in manifest if f.id.split(".")[1] == scene]
        assert ids == [f"nyud2_raw.{scene}.{depth[i][:-4]}" for i in taken]
    assert read_scene_splits(out / "scene_splits.json").found == read_scene_splits(out / "scene_splits.json").found


def test_files_are_the_toolbox_steps(imported):
    root, out, manifest = imported
    frame = manifest.frames[0]
    pair = json.loads((out / "scenes.json").read_text())["scenes"]["bedroom_0001"]["pairs"][0]
    raw = read_depth_pgm(root / "bedroom_0001" / pair[0])
    rgb = read_rgb_ppm(root / "bedroom_0001" / pair[1])
    registered, rgb_u = project_depth_map(raw, rgb, SMALL_CALIBRATION)
    assert np.array_equal(read_rgb(manifest.path(frame.rgb)), rgb_u)
    assert np.array_equal(read_depth_raw(manifest.path(frame.raw_depth)), np.rint(registered * 1000))
    filled = fill_depth_colorization(rgb_u, registered)
    stored = read_depth_raw(manifest.path(frame.depth)).astype(np.float64)
    assert np.abs(stored - filled * 1000).max() <= 0.5 + 1e-6 and (stored > 0).all()
    # HHA of the stored millimetres: `xmodal-data encode` on this manifest would write the same image
    hha = compute_hha(read_depth_m(manifest.path(frame.depth)), frame.intrinsics,
                      read_depth_m(manifest.path(frame.raw_depth)))
    assert np.array_equal(read_rgb(manifest.path(frame.hha)), hha)


def test_only_the_requested_split_and_resume(raw_root, tmp_path):
    root, meta = raw_root
    splits = read_scene_splits(meta / "splits.json")
    manifest = read_manifest(import_nyud2_raw(root, tmp_path, splits, splits=["train"],
                                              calibration=SMALL_CALIBRATION, workers=1, progress=False))
    assert manifest.splits() == {"train": 3}
    hha = sorted((tmp_path / "hha").rglob("*.png"))
    stamps = {p: p.stat().st_mtime_ns for p in hha}
    hha[1].unlink()
    again = read_manifest(import_nyud2_raw(root, tmp_path, splits, splits=["train"], calibration=SMALL_CALIBRATION,
                                           workers=2, progress=False))
    assert [f.id for f in again] == [f.id for f in manifest] and hha[1].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in hha if p != hha[1])
    with pytest.raises(ConfigError, match="differ in: calibration"):
        import_nyud2_raw(root, tmp_path, splits, splits=["train"], progress=False,
                         calibration=SMALL_CALIBRATION.model_copy(update={"fx_rgb": 100.0}))
    with pytest.raises(ConfigError, match="test scenes are never imported"):
        import_nyud2_raw(root, tmp_path, splits, splits=["train", "test"], calibration=SMALL_CALIBRATION)


def test_parallel_workers_write_the_same_files(imported, raw_root, tmp_path):
    root, meta = raw_root
    _, out, manifest = imported
    import_nyud2_raw(root, tmp_path, read_scene_splits(meta / "splits.json"), calibration=SMALL_CALIBRATION,
                     workers=2, progress=False)
    for f in manifest:
        for rel in (f.rgb, f.depth, f.raw_depth, f.hha):
            assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel


def _scene(tmp_path, name="bedroom_0001", depth=(0.0, 0.4, 1.1), rgb=(0.02, 0.5, 1.0)):
    root = tmp_path / "raw"
    write_nyud2_raw_scene(root / name, [T0 + t for t in depth], [T0 + t for t in rgb])
    return root, SceneSplits({name: frozenset({"train"})}, "test mapping")


def _nothing_written(out):
    return not out.exists() or not any(out.iterdir())


def test_bad_inputs_fail_naming_the_file_and_nothing_is_marked_done(tmp_path):
    out = tmp_path / "out"
    root, splits = _scene(tmp_path)

    def run(**kw):
        return import_nyud2_raw(root, out, kw.pop("scene_splits", splits), calibration=SMALL_CALIBRATION,
                                workers=1, progress=False, **kw)

    missing = SceneSplits({"bedroom_0001": frozenset({"train"}), "bathroom_0007": frozenset({"val"})}, "m")
    with pytest.raises(DataError, match=r"1 of the 2 train/val scenes are missing under .*raw/bathroom_0007"):
        run(scene_splits=missing)
    assert _nothing_written(out)
    assert read_manifest(run(scene_splits=missing, allow_missing_scenes=True)).splits() == {"train": 2}
    shutil.rmtree(out)

    pgm = sorted((root / "bedroom_0001").glob("d-*.pgm"))[2]
    data = pgm.read_bytes()
    pgm.write_bytes(data[:-100])
    with pytest.raises(ImageReadError, match=rf"{pgm.name} is truncated"):
        run()
    assert _nothing_written(out)
    pgm.write_bytes(data)

    shutil.copytree(root / "bedroom_0001", root / "bedrooms" / "bedroom_0001")
    with pytest.raises(DataError, match=r"scene bedroom_0001 is found twice: .*raw/bedroom_0001 and .*bedrooms/bed"):
        run()
    shutil.rmtree(root / "bedrooms")

    for ppm in (root / "bedroom_0001").glob("r-*.ppm"):
        ppm.unlink()
    with pytest.raises(DataError, match=r"scene .*bedroom_0001 has no RGB .* no depth frame can be matched"):
        run()
    assert _nothing_written(out)


def test_timestamps_that_never_match_and_wrong_sizes(tmp_path):
    root, splits = _scene(tmp_path, depth=(0.0, 1.0), rgb=(5.0, 6.0))
    with pytest.raises(DataError, match=r"no depth frame has an RGB frame within 0.1 s \(nearest pair 4.000 s"):
        import_nyud2_raw(root, tmp_path / "out", splits, calibration=SMALL_CALIBRATION, max_sync_gap_s=0.1,
                         progress=False)
    with pytest.raises(DataError, match=r"d-.*\.pgm is 160x120 \(WxH\) but the calibration is for 640x480.*"
                                        "--calibration"):
        import_nyud2_raw(root, tmp_path / "out", splits, progress=False)  # default calibration: 640x480
    assert _nothing_written(tmp_path / "out")


def test_scene_splits_from_the_labeled_set(sample_data, tmp_path):
    # the real nyusplits.mat: frames 5001, 5002 test; 5003..5008 train; 5009 test; 5010 val
    scenes = ["office_0002"] * 2 + ["bedroom_0001"] * 5 + ["kitchen_0003", "office_0002", "kitchen_0003"]
    scenes += ["living_room_0001"] * (1449 - len(scenes))  # the rest: all three splits
    mat = write_labeled_scenes_mat(tmp_path / "nyu_depth_v2_labeled.mat", scenes)
    splits = scene_splits_from_labeled(mat, sample_data / "nyud2_meta" / "nyusplits.mat")
    assert {s: sorted(v) for s, v in splits.found.items()} == {
        "office_0002": ["test"], "bedroom_0001": ["train"], "kitchen_0003": ["train", "val"],
        "living_room_0001": ["test", "train", "val"]}
    assert [splits.split(s) for s in ("office_0002", "bedroom_0001", "kitchen_0003", "living_room_0001")] == [
        "test", "train", "val", "test"]
    with pytest.raises(DataError, match=r"labelled frame 6450 .* has no split"):
        scene_splits_from_labeled(write_labeled_scenes_mat(tmp_path / "long.mat", [*scenes, "x"]),
                                  sample_data / "nyud2_meta" / "nyusplits.mat")


def test_scene_split_files(tmp_path):
    csv = tmp_path / "splits.csv"
    csv.write_text("scene,split\nbedroom_0001,train\nbedroom_0001,val\n\nkitchen_0003,test\n")
    assert {s: sorted(v) for s, v in read_scene_splits(csv).found.items()} == {
        "bedroom_0001": ["train", "val"], "kitchen_0003": ["test"]}
    csv.write_text("bedroom_0001,train\nkitchen_0003,holdout\n")
    with pytest.raises(DataError, match="scene 'kitchen_0003' has split 'holdout'"):
        read_scene_splits(csv)
    csv.write_text("bedroom_0001\n")
    with pytest.raises(DataError, match=r"splits\.csv:1: expected 'scene,split'"):
        read_scene_splits(csv)
    js = tmp_path / "splits.json"
    js.write_text(json.dumps({"bedroom_0001": 3}))
    with pytest.raises(DataError, match="maps to 3, expected a split name"):
        read_scene_splits(js)


def test_full_size_frame_with_the_toolbox_constants(tmp_path):
    root = tmp_path / "raw"
    write_nyud2_raw_scene(root / "bedroom_0001", [T0, T0 + 0.5], [T0 + 0.01, T0 + 0.49], shape=(480, 640))
    manifest = read_manifest(import_nyud2_raw(
        root, tmp_path / "out", SceneSplits({"bedroom_0001": frozenset({"train"})}, "m"), progress=False))
    (frame,) = manifest.frames
    assert frame.intrinsics.width == 640 and frame.intrinsics.cx == pytest.approx(324.58244941119034)
    assert read_rgb(manifest.path(frame.hha)).shape == (480, 640, 3)
    raw = read_depth_raw(manifest.path(frame.raw_depth))
    assert 0.3 < (raw > 0).mean() < 0.95 and (read_depth_raw(manifest.path(frame.depth)) > 0).all()


def test_cli(raw_root, tmp_path, capsys):
    root, meta = raw_root
    base = ["nyud2-raw", "--root", str(root), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"]
    given = ["--scene-splits", str(meta / "splits.json"), "--calibration", str(meta / "calibration.json")]
    assert main(base + given + ["--splits", "val", "--every-s", "2"]) == 0
    assert read_manifest(tmp_path / "out" / "manifest.jsonl").splits() == {"val": 4}  # 2 scenes x (0 s, 2 s)
    assert main([*base, "--labeled-mat", "x.mat"]) == 2
    assert "give the scene splits either as --scene-splits" in capsys.readouterr().err
    assert main(base + given + ["--every-s", "0"]) == 2
    assert "--every-s / XMODAL_DATA_NYUD2_RAW_EVERY_S: Input should be greater than 0" in capsys.readouterr().err
    assert main([*base, "--scene-splits", str(meta / "nope.json")]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
