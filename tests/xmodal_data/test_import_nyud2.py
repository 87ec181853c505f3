"""NYUD2 importer: a small fake ``nyu_depth_v2_labeled.mat`` in the real HDF5 layout, plus the real metadata.

The splits and class names come from the real ``../shared/data/nyud2_meta`` (Gupta et al., s-gupta/rgbd);
the fake file uses the real 894 class names, so labels below are real NYU ids (bed = 157, ...).
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from shared.camera import NYUD2_KINECT
from shared.errors import ConfigError, DataError
from shared.imageio import read_depth_raw, read_rgb
from shared.manifest import read_manifest
from tests.xmodal_data.fixtures_real_layouts import matlab_cellstr, stamp_v73_header
from xmodal_data.importers.nyud2 import (
    GUPTA_CLASSES,
    GUPTA_CROP,
    ClassMapping40,
    crop_gupta,
    detection_class_map,
    import_nyud2,
    instance_boxes,
    read_class_mapping40,
    read_splits,
)

H, W = 48, 64
SMALL = NYUD2_KINECT.resize(H, W)
BED, CHAIR, GARBAGE_BIN, MONITOR, TELEVISION, COFFEE_TABLE, WALL = 157, 5, 12, 49, 172, 356, 21


def _class40(mapping: ClassMapping40, label_id: int) -> str:
    """40-class name of raw label ``label_id`` (1-based)."""
    return mapping.class_names[mapping.map_class[label_id - 1] - 1]


@pytest.fixture(scope="module")
def meta(sample_data):
    return sample_data / "nyud2_meta"


@pytest.fixture(scope="module")
def raw_names(meta):
    return read_class_mapping40(meta / "classMapping40.mat").raw_names


def write_mat(path, rgb, depth, raw, labels, instances, names, skip=(), replace=None):
    """Write arrays given in image order ((N, H, W[, 3])) in the MATLAB v7.3 layout (dims reversed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        data = {
            "images": rgb.transpose(0, 3, 2, 1),
            "depths": depth.transpose(0, 2, 1),
            "rawDepths": raw.transpose(0, 2, 1),
            "labels": labels.transpose(0, 2, 1),
            "instances": instances.transpose(0, 2, 1),
            "names": matlab_cellstr(f, names, "n"),  # MATLAB 894x1 cell -> (1, 894)
        } | (replace or {})
        for key, value in data.items():
            if key not in skip:
                f.create_dataset(key, data=value)
    return stamp_v73_header(path)


def _fake_arrays(n=10, h=H, w=W):
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([(rows * 5 + i) % 256 for i in range(n)])[..., None].repeat(3, -1).astype(np.uint8)
    rgb[..., 1] = (cols * 3)[None] % 256
    depth = np.stack([0.5 + 0.01 * rows + 0.001 * cols + 0.1 * i for i in range(n)]).astype(np.float32)
    raw = depth.copy()
    raw[:, ::7, ::5] = 0
    labels = np.zeros((n, h, w), np.uint16)
    instances = np.zeros((n, h, w), np.uint8)
    labels[2:, :10, :10] = WALL  # unmapped classes elsewhere
    return rgb, depth, raw, labels, instances


def _objects(labels, instances):
    """Frame 0's objects and their boxes (x1, y1, x2, y2, x2/y2 exclusive), computed by hand."""
    labels[5:15, 3:21], instances[5:15, 3:21] = BED, 1  # rows 5..14, cols 3..20
    labels[30:41, 50:64], instances[30:41, 50:64] = BED, 2
    labels[20:26, 10:13], instances[20:26, 10:13] = CHAIR, 1  # an L: vertical bar ...
    labels[25:28, 10:31], instances[25:28, 10:31] = CHAIR, 1  # ... and foot
    labels[0:4, 60:64], instances[0:4, 60:64] = GARBAGE_BIN, 1
    labels[47, 0], instances[47, 0] = MONITOR, 1
    labels[44:47, 30:34], instances[44:47, 30:34] = TELEVISION, 0  # a (label, 0) pair is an object too
    labels[16:19, 30:40], instances[16:19, 30:40] = COFFEE_TABLE, 1  # not "table" in Gupta's benchmark
    return [  # sorted by (label id, instance)
        ("chair", (10, 20, 31, 28)),
        ("garbage bin", (60, 0, 64, 4)),
        ("monitor", (0, 47, 1, 48)),
        ("bed", (3, 5, 21, 15)),
        ("bed", (50, 30, 64, 41)),
        ("television", (30, 44, 34, 47)),
    ]


@pytest.fixture(scope="module")
def fake(tmp_path_factory, raw_names):
    rgb, depth, raw, labels, instances = _fake_arrays()
    expected = _objects(labels[0], instances[0])
    path = write_mat(tmp_path_factory.mktemp("nyu") / "nyu_depth_v2_labeled.mat", rgb, depth, raw, labels,
                     instances, raw_names)
    return path, (rgb, depth, raw), expected


def _boxes(frame):
    return [(o.label, tuple(int(v) for v in o.box)) for o in frame.objects]


def test_import_small_file(fake, meta, tmp_path):
    path, (rgb, depth, raw), expected = fake
    manifest = read_manifest(import_nyud2(path, meta, tmp_path, limit=10, progress=False, camera=SMALL))
    assert manifest.classes == list(GUPTA_CLASSES)
    assert [f.id for f in manifest] == [f"nyud2.img_{5001 + i}" for i in range(10)]
    # real nyusplits.mat: 5001, 5002 test; 5003..5008 train; 5009 test; 5010 val
    assert [f.split for f in manifest] == ["test"] * 2 + ["train"] * 6 + ["test", "val"]
    first = manifest["nyud2.img_5001"]
    assert _boxes(first) == expected
    assert manifest["nyud2.img_5002"].objects == []  # labelled, no object of the 19 classes
    assert all(f.intrinsics == SMALL for f in manifest)
    assert np.array_equal(read_rgb(manifest.path(first.rgb)), rgb[0])
    for i, f in enumerate(manifest):
        assert np.array_equal(read_depth_raw(manifest.path(f.depth)), np.rint(depth[i].astype(np.float64) * 1000))
        stored_raw = read_depth_raw(manifest.path(f.raw_depth))
        assert np.array_equal(stored_raw, np.rint(raw[i].astype(np.float64) * 1000))
        assert (stored_raw[::7, ::5] == 0).all()


def test_without_limit_the_file_must_hold_every_split_frame(fake, meta, tmp_path):
    with pytest.raises(DataError, match=r"frame count mismatch: .* holds 10 labeled frames .* assigns 1449"):
        import_nyud2(fake[0], meta, tmp_path, progress=False, camera=SMALL)


def test_limit_imports_a_prefix_and_reports_the_rest(fake, meta, tmp_path, caplog):
    manifest = read_manifest(import_nyud2(fake[0], meta, tmp_path, limit=3, progress=False, camera=SMALL))
    assert len(manifest) == 3
    assert "1446 frames of the splits are skipped" in caplog.text
    with pytest.raises(ConfigError, match="limit must be >= 1"):
        import_nyud2(fake[0], meta, tmp_path, limit=0, camera=SMALL)


def test_resume_keeps_existing_files_and_refuses_other_settings(fake, meta, tmp_path):
    import_nyud2(fake[0], meta, tmp_path, limit=2, progress=False, camera=SMALL)
    kept = tmp_path / "rgb" / "img_5001.png"
    kept.write_bytes((tmp_path / "rgb" / "img_5002.png").read_bytes())  # a stand-in the rerun must keep
    (tmp_path / "depth" / "img_5002.png").unlink()
    manifest = read_manifest(import_nyud2(fake[0], meta, tmp_path, limit=2, progress=False, camera=SMALL))
    assert kept.read_bytes() == (tmp_path / "rgb" / "img_5002.png").read_bytes()
    assert manifest.path(manifest["nyud2.img_5002"].depth).is_file()
    other = SMALL.model_copy(update={"fx": 100.0})
    with pytest.raises(ConfigError, match="differ in: camera"):
        import_nyud2(fake[0], meta, tmp_path, limit=2, progress=False, camera=other)
    copy = shutil.copy(fake[0], tmp_path.parent / f"{tmp_path.name}-other.mat")
    with pytest.raises(ConfigError, match="differ in: source"):
        import_nyud2(copy, meta, tmp_path, limit=2, progress=False, camera=SMALL)


def test_crop_adjusts_images_boxes_and_intrinsics(meta, raw_names, tmp_path):
    rgb, depth, raw, labels, instances = _fake_arrays(n=1, h=480, w=640)
    labels[0, 30:61, 10:101], instances[0, 30:61, 10:101] = BED, 1  # straddles the crop's top-left corner
    labels[0, 0:40, 200:300], instances[0, 0:40, 200:300] = CHAIR, 1  # above row 45: cropped away
    labels[0, 100:200, 590:620], instances[0, 100:200, 590:620] = TELEVISION, 3  # crosses the right edge
    path = write_mat(tmp_path / "full.mat", rgb, depth, raw, labels, instances, raw_names)
    full = read_manifest(import_nyud2(path, meta, tmp_path / "full", limit=1, progress=False))
    assert _boxes(full.frames[0]) == [("chair", (200, 0, 300, 40)), ("bed", (10, 30, 101, 61)),
                                      ("television", (590, 100, 620, 200))]
    cropped = read_manifest(import_nyud2(path, meta, tmp_path / "crop", crop=True, limit=1, progress=False))
    frame = cropped.frames[0]
    # visible parts only, shifted by (left, top) = (40, 45): bed rows 45..60 cols 40..100, tv cols 590..599
    assert _boxes(frame) == [("bed", (0, 0, 61, 16)), ("television", (550, 55, 560, 155))]
    assert frame.intrinsics == NYUD2_KINECT.crop(**GUPTA_CROP)
    assert (frame.intrinsics.cx, frame.intrinsics.cy) == (NYUD2_KINECT.cx - 40, NYUD2_KINECT.cy - 45)
    image = read_rgb(cropped.path(frame.rgb))
    assert image.shape == (425, 560, 3)
    assert np.array_equal(image, rgb[0, 45:470, 40:600])
    assert np.array_equal(read_depth_raw(cropped.path(frame.depth)), np.rint(crop_gupta(depth[0]) * 1000.0))
    assert read_depth_raw(cropped.path(frame.raw_depth)).shape == (425, 560)
    with pytest.raises(ConfigError, match="needs 480x640 frames"):
        import_nyud2(path, meta, tmp_path / "small", crop=True, limit=1, camera=SMALL)


def _small(tmp_path, raw_names, name="bad.mat", **kw):
    return write_mat(tmp_path / name, *_fake_arrays(n=2), names=kw.pop("names", raw_names), **kw)


def test_layout_errors_name_the_dataset_and_shape(meta, raw_names, tmp_path):
    def run(path):
        import_nyud2(path, meta, tmp_path / "out", limit=2, progress=False, camera=SMALL)

    with pytest.raises(DataError, match=r"'depths' is missing; expected a float array of shape \(N, 64, 48\)"):
        run(_small(tmp_path, raw_names, skip=("depths",)))
    transposed = np.zeros((2, H, W), np.uint16)
    with pytest.raises(DataError, match=r"'labels' has shape \(2, 48, 64\), expected .* swapped"):
        run(_small(tmp_path, raw_names, replace={"labels": transposed}))
    with pytest.raises(DataError, match=r"'images' has dtype float64, expected a uint8 array"):
        run(_small(tmp_path, raw_names, replace={"images": np.zeros((2, 3, W, H))}))
    with pytest.raises(DataError, match="different frame counts"):
        run(_small(tmp_path, raw_names, replace={"instances": np.zeros((3, W, H), np.uint8)}))
    with pytest.raises(DataError, match="'names' is missing or not a cell array"):
        run(_small(tmp_path, raw_names, names=[], replace={"names": np.zeros((1, 894))}))


def test_junk_and_missing_files(meta, tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"junk\.mat is not an HDF5 file"):
        import_nyud2(junk, meta, tmp_path / "out", camera=SMALL)
    with pytest.raises(FileNotFoundError, match=r"nope\.mat does not exist"):
        import_nyud2(tmp_path / "nope.mat", meta, tmp_path / "out", camera=SMALL)
    with pytest.raises(FileNotFoundError, match=r"nyusplits\.mat does not exist"):
        import_nyud2(junk, tmp_path, tmp_path / "out", camera=SMALL)


def test_content_errors(meta, raw_names, tmp_path):
    def run(path):
        import_nyud2(path, meta, tmp_path / path.stem, limit=2, progress=False, camera=SMALL)

    renamed = list(raw_names)
    renamed[MONITOR - 1] = "computer monitor"
    with pytest.raises(DataError, match=r"\(49, 'monitor'\)\]: another NYU label version"):
        run(_small(tmp_path, raw_names, names=renamed))
    rgb, depth, raw, labels, instances = _fake_arrays(n=2)
    labels[1, 0, 0] = 900
    with pytest.raises(DataError, match=r"labels\[1\] holds class id 900 beyond the 894 names"):
        run(write_mat(tmp_path / "ids.mat", rgb, depth, raw, labels, instances, raw_names))
    with pytest.raises(DataError, match=r"depths\[0\] \(frame nyud2.img_5001\) spans .* expected metres"):
        run(write_mat(tmp_path / "mm.mat", rgb, depth * 1000, raw, labels * 0, instances, raw_names))


def test_instance_boxes_and_class_map():
    labels = np.zeros((6, 8), np.uint16)
    instances = np.zeros((6, 8), np.uint8)
    labels[1:3, 2:5], instances[1:3, 2:5] = 7, 1
    labels[4, 7], instances[4, 7] = 7, 2
    labels[5, 0:2] = 3  # unmapped
    boxes = instance_boxes(labels, instances, {7: "box"})
    assert [(b.label, b.box) for b in boxes] == [("box", (2, 1, 5, 3)), ("box", (7, 4, 8, 5))]
    assert instance_boxes(labels, instances, {}) == []
    with pytest.raises(ValueError, match="must be"):
        instance_boxes(labels, instances[:, :4], {7: "box"})
    names = ["Night-Stand", "coffee table", "garbage  bin", "table", "tv"]
    assert detection_class_map(names) == {1: "night stand", 3: "garbage bin", 4: "table"}


def test_real_meta_splits_and_class_reachability(meta):
    splits = read_splits(meta / "nyusplits.mat")
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 381, "val": 414, "test": 654}
    assert set(splits) == set(range(5001, 6450))
    mapping = read_class_mapping40(meta / "classMapping40.mat")
    assert len(mapping.raw_names) == len(mapping.map_class) == 894 and len(mapping.class_names) == 40
    class_map = detection_class_map(mapping.raw_names)
    assert set(class_map.values()) == set(GUPTA_CLASSES)  # every class is reachable
    # The name rule equals the 40-class mapping for the 17 classes it has ...
    for cls in set(GUPTA_CLASSES) & set(mapping.class_names):
        by_40 = {i for i in range(1, 895) if _class40(mapping, i) == cls}
        assert {i for i, c in class_map.items() if c == cls} == by_40, cls
    # ... and adds the two raw names the 40 classes fold into "other": garbage bin and monitor.
    assert set(GUPTA_CLASSES) - set(mapping.class_names) == {"garbage bin", "monitor"}
    assert {class_map[GARBAGE_BIN], class_map[MONITOR]} == {"garbage bin", "monitor"}
    assert (_class40(mapping, GARBAGE_BIN), _class40(mapping, MONITOR)) == ("otherfurniture", "otherprop")


def test_splits_file_errors(meta, tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "nyusplits.mat", {"train": [[5001, 5002]], "val": [[5002]], "test": [[5003]]})
    with pytest.raises(DataError, match="frame 5002 is in both 'train' and 'val'"):
        read_splits(tmp_path / "nyusplits.mat")
    scipy.io.savemat(tmp_path / "nyusplits.mat", {"train": [[5001]]})
    with pytest.raises(DataError, match="has no variable 'val'"):
        read_splits(tmp_path / "nyusplits.mat")
    shutil.copy(meta / "nyusplits.mat", tmp_path / "classMapping40.mat")
    with pytest.raises(DataError, match="has no variable 'allClassName'"):
        read_class_mapping40(tmp_path / "classMapping40.mat")
