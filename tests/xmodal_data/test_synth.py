"""The built-in synthetic dataset: files, determinism, geometry, labels, sensor noise, clips, resume."""

import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from shared.camera import Intrinsics
from shared.errors import ConfigError
from shared.imageio import read_depth_m, read_depth_raw, read_rgb
from shared.manifest import read_manifest
from xmodal_data.synth import SPLIT_KINDS, SynthConfig, frame_id, generate_synth, synthesize_frame
from xmodal_data.synth.contact_sheet import COLUMNS, make_contact_sheet
from xmodal_data.synth.geometry import Pose, camera_pose, rot_y
from xmodal_data.synth.labels import visible_boxes
from xmodal_data.synth.render import cast_rays
from xmodal_data.synth.scene import Light, Material, Part, Plane, Scene, SceneObject
from xmodal_data.synth.sensor import KinectNoise, kinect_depth
from xmodal_data.synth.shapes import Box, Capsule, Cone, Cylinder, Sphere

TINY = SynthConfig.profile("tiny")
GREY = Material(colour=(0.5, 0.5, 0.5), colour2=(0.3, 0.3, 0.3))
CAMERA = Intrinsics(fx=80.0, fy=80.0, cx=49.5, cy=39.5, width=100, height=80)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_tiny")
    generate_synth(out, TINY, workers=1, progress=False)
    return out


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scene(objects, camera=None):
    """Floor (y = 0) and a back wall at z = 8 m, seen from 1.2 m high looking along +z, tilted down."""
    planes = (Plane(np.array([0.0, 1.0, 0.0]), 0.0, GREY), Plane(np.array([0.0, 0.0, -1.0]), -8.0, GREY))
    light = Light(direction=np.array([0.0, 1.0, 0.0]), diffuse=0.7, ambient=0.3, colour=np.ones(3))
    camera = camera or camera_pose(np.array([0.0, 1.2, 0.0]), yaw=0.0, pitch_down=0.2, roll=0.0)
    return Scene(camera=camera, planes=planes, objects=tuple(objects), light=light)


def _on_floor(label, x, z, *parts):
    return SceneObject(label, Pose(np.eye(3), np.array([x, 0.0, z])), parts, GREY)


def _mask_box(mask):
    rows, cols = np.nonzero(mask)
    return (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


# --- files and manifest ---------------------------------------------------------------------------------------


def test_manifest_and_files(tiny_dir):
    m = read_manifest(tiny_dir / "manifest.jsonl")
    assert m.header.dataset == "synth" and m.classes == list(TINY.classes)
    assert m.splits() == dict(TINY.splits.items())
    h, w = TINY.height, TINY.width
    for f in m:
        kind, labelled = SPLIT_KINDS[f.split]
        assert f.labeled == labelled and f.intrinsics == TINY.intrinsics()
        rgb = read_rgb(m.path(f.rgb))
        assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3)
        if kind == "depth":
            for path in (f.depth, f.raw_depth):
                assert read_depth_raw(m.path(path)).shape == (h, w)  # uint16 mm, or it raises
            assert f.rgb_next is None
        else:
            assert read_rgb(m.path(f.rgb_next)).shape == (h, w, 3) and f.depth is None
        for obj in f.objects or ():
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and obj.label in TINY.classes
    assert sum(len(f.objects or ()) for f in m) > 10


def test_same_seed_same_bytes_parallel_equals_serial(tiny_dir, tmp_path):
    generate_synth(tmp_path / "par", TINY, workers=2, progress=False)
    assert _files(tmp_path / "par") == _files(tiny_dir)


def test_other_seed_other_frames():
    other = TINY.model_copy(update={"seed": 1})
    a, b = synthesize_frame(TINY, "depth_test", 0), synthesize_frame(other, "depth_test", 0)
    assert not np.array_equal(a.rgb, b.rgb) and not np.array_equal(a.depth, b.depth)


def test_frames_depend_on_split_and_index_only():
    bigger = TINY.model_copy(update={"splits": TINY.splits.model_copy(update={"rgb_train": 50})})
    assert np.array_equal(synthesize_frame(bigger, "depth_test", 2).rgb, synthesize_frame(TINY, "depth_test", 2).rgb)
    assert not np.array_equal(synthesize_frame(TINY, "depth_test", 2).rgb, synthesize_frame(TINY, "depth_test", 1).rgb)


def test_resume_skips_finished_frames(tiny_dir, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(tiny_dir, out)
    lost_image, lost_record = frame_id("rgb_train", 1), frame_id("flow_test", 0)
    (out / "rgb" / f"{lost_image}.png").unlink()
    (out / "records" / f"{lost_record}.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    generate_synth(out, TINY, workers=1, progress=False)
    rewritten = {p.name for p in out.rglob("*.png") if before.get(p) != p.stat().st_mtime_ns}
    assert rewritten and {name.rsplit(".", 1)[0] for name in rewritten} == {lost_image, lost_record}
    assert _files(out) == _files(tiny_dir)


def test_resume_refuses_other_settings(tiny_dir, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(tiny_dir, out)
    with pytest.raises(ConfigError, match="seed"):
        generate_synth(out, TINY.model_copy(update={"seed": 7}), workers=1, progress=False)


def test_profiles():
    quick = SynthConfig.profile("quick")
    assert (quick.height, quick.width) == (96, 128) and quick.splits.rgb_train == 1000
    assert SynthConfig.profile("full").width == 320
    with pytest.raises(ValueError, match="'huge'"):
        SynthConfig.profile("huge")
    with pytest.raises(ValidationError, match="teapot"):
        SynthConfig(height=32, width=32, classes=("box", "teapot"), splits=TINY.splits)


# --- labels ---------------------------------------------------------------------------------------------------


def test_boxes_are_tight_around_the_visible_instance_mask(tiny_dir):
    m = read_manifest(tiny_dir / "manifest.jsonl")
    checked = 0
    for f in m:
        if not f.labeled:
            continue
        split, index = f.id.split(".")[1], int(f.id.split(".")[2])
        frame = synthesize_frame(TINY, split, index)
        instance, labels = frame.hits.instance, frame.scene.labels
        mask_boxes = {(labels[k], _mask_box(instance == k)) for k in np.unique(instance) if k >= 0}
        for obj in f.objects:
            assert (obj.label, tuple(int(c) for c in obj.box)) in mask_boxes
            checked += 1
    assert checked > 10


def test_hidden_object_gets_no_box_and_occluded_box_is_visible_part():
    wall = _on_floor("box", 0.0, 2.5, Part(Box((0.6, 0.6, 0.2)), (0.0, 0.6, 0.0)))
    hidden = _on_floor("sphere", 0.0, 4.0, Part(Sphere(0.2), (0.0, 0.2, 0.0)))
    peeking = _on_floor("cone", 1.1, 4.0, Part(Cone(0.35, 0.8)))  # world +x is image left
    hits = cast_rays(_scene([wall, hidden, peeking]), CAMERA)
    assert hits.amodal[1] > 20  # it would be seen without the box...
    assert not (hits.instance == 1).any()  # ...but is not
    boxes = visible_boxes(hits.instance, hits.amodal, ["box", "sphere", "cone"], min_pixels=20, min_fraction=0.1)
    assert [b.label for b in boxes] == ["box", "cone"]
    alone = cast_rays(_scene([peeking]), CAMERA)
    full_box, cut_box = _mask_box(alone.instance == 0), boxes[1].box
    assert cut_box[0] == full_box[0] and cut_box[2] < full_box[2]  # the box hides the cone's right side
    assert visible_boxes(hits.instance, hits.amodal, ["box", "sphere", "cone"], 20, 0.99) == boxes[:1]


def test_clutter_gets_no_box():
    clutter = _on_floor(None, 0.0, 3.0, Part(Sphere(0.3), (0.0, 0.3, 0.0)))
    hits = cast_rays(_scene([clutter]), CAMERA)
    assert (hits.instance == 0).sum() > 20
    assert visible_boxes(hits.instance, hits.amodal, [None], 1, 0.0) == []


# --- geometry -------------------------------------------------------------------------------------------------


def _back_project(depth, intrinsics, pose):
    """World points (3, H, W) of a z-depth map."""
    v, u = np.mgrid[: intrinsics.height, : intrinsics.width]
    cam = np.stack([(u - intrinsics.cx) / intrinsics.fx * depth, (v - intrinsics.cy) / intrinsics.fy * depth, depth])
    return np.einsum("ij,jhw->ihw", pose.rotation, cam) + pose.position[:, None, None]


def test_depth_is_z_depth_on_the_floor_plane():
    camera = camera_pose(np.array([0.3, 1.4, -0.2]), yaw=0.3, pitch_down=0.35, roll=0.06)
    hits = cast_rays(_scene([], camera), CAMERA)
    floor, wall = hits.surface == 0, hits.surface == 1
    assert floor.sum() > 1000 and wall.sum() > 100
    world = _back_project(hits.depth, CAMERA, camera)
    np.testing.assert_allclose(world[1][floor], 0.0, atol=1e-9)
    np.testing.assert_allclose(world[2][wall], 8.0, atol=1e-9)
    np.testing.assert_allclose(world, hits.point * (hits.depth > 0), atol=1e-9)


def test_written_depth_is_metric_z_depth(tiny_dir):
    m = read_manifest(tiny_dir / "manifest.jsonl")
    f = m[frame_id("depth_test", 0)]
    frame = synthesize_frame(TINY, "depth_test", 0)
    depth = read_depth_m(m.path(f.depth))
    floor = frame.hits.surface == 0
    world = _back_project(depth, f.intrinsics, frame.scene.camera)
    assert floor.sum() > 100
    np.testing.assert_allclose(world[1][floor], 0.0, atol=3e-3)  # mm rounding


@pytest.mark.parametrize(
    "shape, centre",
    [(Sphere(0.4), (0.0, 0.0, 0.0)), (Box((0.3, 0.2, 0.4)), (0.0, 0.0, 0.0)), (Cylinder(0.3, 0.8), (0.0, 0.4, 0.0)),
     (Cone(0.4, 0.8), (0.0, 0.3, 0.0)), (Capsule(0.2, 0.4), (0.0, 0.0, 0.0))],
)
def test_shapes_hit_their_surface(shape, centre):
    rng = np.random.default_rng(0)
    origin = np.array([0.5, 1.5, -3.0])
    target = np.asarray(centre)[:, None] + rng.uniform(-0.1, 0.1, (3, 200))
    dirs = target - origin[:, None]
    t = shape.intersect(origin, dirs)
    assert np.isfinite(t).all()
    points = origin[:, None] + dirs * t
    n = shape.normal(points)
    np.testing.assert_allclose(np.linalg.norm(n, axis=0), 1.0, atol=1e-9)
    assert ((n * dirs).sum(axis=0) < 0).all()  # seen from outside: normals face the ray
    # A point just inside the surface is inside the solid: the ray out along the normal leaves at once.
    inner = shape.intersect(points[:, 0] - 1e-4 * n[:, 0], n[:, :1])
    assert inner[0] < 1e-3


# --- sensor ---------------------------------------------------------------------------------------------------


def test_raw_depth_has_holes_and_noise_but_agrees(tiny_dir):
    m = read_manifest(tiny_dir / "manifest.jsonl")
    frames = [f for f in m if f.raw_depth is not None]
    depth = np.stack([read_depth_m(m.path(f.depth)) for f in frames])
    raw = np.stack([read_depth_m(m.path(f.raw_depth)) for f in frames])
    valid = raw > 0
    assert 0.01 < 1 - valid.mean() < 0.6
    err = np.abs(raw - depth)[valid]
    assert (err > 0.001).mean() > 0.5  # noisy...
    assert (err <= 0.005 + 0.02 * depth[valid] ** 2).all()  # ...within the Kinect error budget
    assert raw.max() <= TINY.sensor.max_range_m


def test_projector_shadow_left_of_a_foreground_object():
    depth = np.full((5, 100), 4.0)
    depth[:, 40:60] = 2.0
    clean = KinectNoise(disparity_noise_px=0, disparity_step_px=0, edge_drop_prob=0, dark_drop_prob=0, dropout_prob=0)
    raw = kinect_depth(depth, np.ones_like(depth), np.full_like(depth, 0.5), 400.0, np.random.default_rng(0), clean)
    missing = np.flatnonzero(raw[0] == 0)
    # Shadow width fx * b * (1/2 - 1/4) = 7.5 px: pixel centres 33..39 left of the object; none on its right.
    np.testing.assert_array_equal(missing, np.arange(33, 40))
    np.testing.assert_allclose(raw[raw > 0], depth[raw > 0])


def test_depth_edges_drop_at_jumps_not_on_slanted_planes():
    box = _on_floor("box", 0.0, 3.0, Part(Box((0.4, 0.4, 0.4)), (0.0, 0.4, 0.0)))
    hits = cast_rays(_scene([box]), CAMERA)
    only_edges = KinectNoise(
        disparity_noise_px=0, disparity_step_px=0, edge_drop_prob=1, dark_drop_prob=0, dropout_prob=0, grazing_cos=0
    )
    raw = kinect_depth(hits.depth, hits.cos_incidence, np.ones_like(hits.depth), CAMERA.fx, np.random.default_rng(0),
                       only_edges)
    in_range = (hits.depth > 0) & (hits.depth < 5.5)
    near_box = np.zeros_like(in_range)
    rows, cols = np.nonzero(hits.instance == 0)
    near_box[rows.min() - 2 : rows.max() + 3, cols.min() - 12 : cols.max() + 3] = True  # shadow falls left
    assert not (raw[in_range & ~near_box] == 0).any()  # the floor recedes fast but is one plane
    assert (raw[near_box & (hits.instance != 0)] == 0).sum() > 10  # silhouette and shadow


# --- flow clips -----------------------------------------------------------------------------------------------


def test_flow_clips_move_labelled_objects_only():
    moved = 0
    for index in range(TINY.splits.flow_test):
        frame = synthesize_frame(TINY, "flow_test", index)
        assert frame.next_scene is not None and not np.array_equal(frame.rgb, frame.rgb_next)
        after = cast_rays(frame.next_scene, TINY.intrinsics())
        for k, (a, b) in enumerate(zip(frame.scene.objects, frame.next_scene.objects, strict=True)):
            shift = np.linalg.norm(b.pose.position - a.pose.position)
            if a.label is None:
                assert shift == 0
                continue
            assert shift > 0 and not np.allclose(a.pose.rotation, b.pose.rotation)
            m0, m1 = frame.hits.instance == k, after.instance == k
            if m0.sum() == frame.hits.amodal[k] > 30 and m1.sum() == after.amodal[k]:  # unoccluded both times
                c0, c1 = np.argwhere(m0).mean(axis=0), np.argwhere(m1).mean(axis=0)
                assert 0.3 < np.linalg.norm(c1 - c0) < 10  # "a few pixels' worth"
                moved += 1
    assert moved >= 2


def test_rotation_helpers_are_rotations():
    r = rot_y(0.7) @ camera_pose(np.zeros(3), 0.2, 0.3, 0.1).rotation
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)


# --- contact sheet --------------------------------------------------------------------------------------------


def test_contact_sheet(tiny_dir, tmp_path):
    out = make_contact_sheet(tiny_dir / "manifest.jsonl", tmp_path / "sheet.png", n=4)
    sheet = read_rgb(out)
    scale = -(-192 // TINY.height)
    assert sheet.shape[1] == len(COLUMNS) * (TINY.width * scale + 2)
    assert sheet.shape[0] > 4 * TINY.height * scale
