"""Ground-truth flow of the synthetic clips: analytic cases, a photometric check, occlusions, the files."""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.camera import Intrinsics
from shared.errors import DataError
from shared.manifest import read_manifest
from xmodal_data.flow import read_flow_png
from xmodal_data.synth import SynthConfig, frame_id, generate_synth, synthesize_frame
from xmodal_data.synth.flow_gt import (
    HIDDEN,
    OUT_OF_VIEW,
    VISIBLE,
    ground_truth_flow,
    moved_points,
    read_occlusion,
)
from xmodal_data.synth.geometry import Pose, camera_pose, rot_x, rot_y, rot_z
from xmodal_data.synth.motion import MotionConfig
from xmodal_data.synth.render import cast_rays, ray_depths
from xmodal_data.synth.scene import Light, Material, Part, Plane, Scene, SceneObject
from xmodal_data.synth.sensor import rgb_camera
from xmodal_data.synth.shading import albedo_image, shade
from xmodal_data.synth.shapes import Box, Cylinder, Sphere

TINY = SynthConfig.profile("tiny")
CAMERA = Intrinsics(fx=100.0, fy=100.0, cx=63.5, cy=47.5, width=128, height=96)
REFERENCE = Path(__file__).parent / "data" / "synth_tiny_flow_rgb_t.npz"


def _material(pattern="plain", scale=0.5, colour=(0.6, 0.5, 0.4)):
    return Material(colour=colour, colour2=(0.2, 0.3, 0.5), pattern=pattern, scale=scale)


def _scene(objects, camera=None, light=None):
    """Floor, back wall at z = 6 m and a side wall at x = -2.5 m, seen from 1.3 m, tilted down."""
    planes = (
        Plane(np.array([0.0, 1.0, 0.0]), 0.0, _material("checker", 0.6)),
        Plane(np.array([0.0, 0.0, -1.0]), -6.0, _material("stripes", 0.4, (0.8, 0.8, 0.7))),
        Plane(np.array([1.0, 0.0, 0.0]), -2.5, _material("bands", 0.5, (0.7, 0.6, 0.8))),
    )
    light = light or Light(direction=np.array([0.3, 1.0, -0.2]) / np.linalg.norm([0.3, 1.0, -0.2]),
                           diffuse=0.6, ambient=0.4, colour=np.ones(3))
    camera = camera or camera_pose(np.array([0.2, 1.3, 0.0]), yaw=0.1, pitch_down=0.25, roll=0.03)
    return Scene(camera=camera, planes=planes, objects=tuple(objects), light=light)


def _objects():
    box = SceneObject("box", Pose(rot_y(0.4), np.array([0.5, 0.0, 3.0])), (Part(Box((0.5, 0.7, 0.4)), (0, 0.35, 0)),),
                      _material("stripes", 0.25, (0.8, 0.3, 0.2)))
    ball = SceneObject("sphere", Pose(np.eye(3), np.array([-0.7, 0.0, 3.8])), (Part(Sphere(0.4), (0, 0.4, 0)),),
                       _material("bands", 0.3, (0.2, 0.7, 0.3)))
    post = SceneObject(None, Pose(np.eye(3), np.array([1.4, 0.0, 4.5])), (Part(Cylinder(0.15, 1.2), (0, 0.6, 0)),),
                       _material())
    return [box, ball, post]


def _camera_moved(scene, translation_cam=(0.0, 0.0, 0.0), rotation_cam=None):
    """The scene seen from the camera moved by a translation and rotation given in its own frame."""
    cam = scene.camera
    rotation = cam.rotation if rotation_cam is None else cam.rotation @ rotation_cam
    moved = Pose(rotation=rotation, position=cam.position + cam.rotation @ np.asarray(translation_cam))
    return dataclasses.replace(scene, camera=moved)


def _render(scene, intrinsics=CAMERA):
    hits = cast_rays(scene, intrinsics)
    return hits, rgb_camera(shade(albedo_image(hits, scene), hits, scene.light), np.random.default_rng(0), 0.0)


def _pixel_grid(intrinsics=CAMERA):
    rows, cols = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width]
    return cols.astype(np.float64), rows.astype(np.float64)


def test_camera_translation_gives_f_t_over_z():
    scene = _scene(_objects())
    t = np.array([0.06, -0.03, 0.0])  # metres, in the camera frame: right and up
    hits = cast_rays(scene, CAMERA)
    gt = ground_truth_flow(scene, hits, _camera_moved(scene, t), CAMERA)
    z = hits.depth
    np.testing.assert_allclose(gt.flow[..., 0], -CAMERA.fx * t[0] / z, atol=2e-4)
    np.testing.assert_allclose(gt.flow[..., 1], -CAMERA.fy * t[1] / z, atol=2e-4)
    assert np.abs(gt.flow[..., 0]).max() > 1.0  # parallax: near points move more than far ones
    assert gt.flow[..., 0].max() - gt.flow[..., 0].min() > 0.5


def test_camera_rotation_gives_the_homography_whatever_the_depth():
    scene = _scene(_objects())
    rotation = rot_y(0.02) @ rot_x(-0.01) @ rot_z(0.015)
    gt = ground_truth_flow(scene, cast_rays(scene, CAMERA), _camera_moved(scene, rotation_cam=rotation), CAMERA)
    u, v = _pixel_grid()
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)])
    x, y, z = np.einsum("ji,jhw->ihw", rotation, rays)  # the ray in the rotated camera's frame
    np.testing.assert_allclose(gt.flow[..., 0], CAMERA.cx + CAMERA.fx * x / z - u, atol=2e-4)
    np.testing.assert_allclose(gt.flow[..., 1], CAMERA.cy + CAMERA.fy * y / z - v, atol=2e-4)


def _moving_clip():
    """Camera steps right and forward and turns a little; the box slides and turns, the ball rolls left."""
    scene = _scene(_objects(), light=Light(direction=np.array([0.0, 1.0, 0.0]), diffuse=0.0, ambient=1.0,
                                           colour=np.ones(3)))  # ambient only: brightness is constant
    box, ball, post = scene.objects
    turned = rot_y(0.08) @ box.pose.rotation
    box1 = dataclasses.replace(box, pose=Pose(turned, np.add(box.pose.position, (0.06, 0, 0.02))))
    ball1 = dataclasses.replace(ball, pose=Pose(rot_y(-0.1), np.add(ball.pose.position, (0.07, 0, -0.03))))
    next_scene = _camera_moved(dataclasses.replace(scene, objects=(box1, ball1, post)), (0.04, 0.0, 0.05), rot_y(0.01))
    return scene, next_scene


def _landing_error(rgb, rgb_next, flow):
    """|frame t - frame t+1 at x + flow| per pixel (H, W), grey levels, mean over channels.

    The textures are step patterns sampled at pixel centres (no anti-aliasing), so frame t+1 at a sub-pixel
    position is not a blend of its neighbours: the colour there is that of one of the 4 pixels around it
    (away from thin features). The error is the smallest over those 4; bilinear sampling would mix colours
    across every pattern edge.
    """
    u, v = _pixel_grid()
    x, y = u + flow[..., 0], v + flow[..., 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    best = np.full(x.shape, np.inf)
    for dy in (0, 1):
        for dx in (0, 1):
            r, c = np.clip(y0 + dy, 0, CAMERA.height - 1), np.clip(x0 + dx, 0, CAMERA.width - 1)
            best = np.minimum(best, np.abs(rgb_next[r, c].astype(np.float64) - rgb).mean(axis=-1))
    return best


def _away_from_edges(hits):
    """Pixels whose 3x3 neighbourhood sees one surface (bilinear sampling there mixes no two surfaces)."""
    s = hits.surface.astype(np.float32)
    return (cv2.dilate(s, np.ones((3, 3))) == s) & (cv2.erode(s, np.ones((3, 3))) == s)


def test_frame_t1_at_the_landing_positions_reproduces_frame_t():
    scene, next_scene = _moving_clip()
    hits, rgb = _render(scene)
    rgb_next = _render(next_scene)[1]
    gt = ground_truth_flow(scene, hits, next_scene, CAMERA)
    inner = gt.valid & _away_from_edges(hits)
    objects = inner & (hits.instance >= 0) & (hits.instance < 2)
    assert inner.mean() > 0.7 and objects.sum() > 500

    camera_only = ground_truth_flow(scene, hits, dataclasses.replace(next_scene, objects=scene.objects), CAMERA)
    err = _landing_error(rgb, rgb_next, gt.flow)
    assert (err[inner] > 5).mean() < 0.02 and err[inner].mean() < 1.0
    for wrong in (np.zeros_like(gt.flow), gt.flow + np.float32([1.0, 0.0]), gt.flow + np.float32([0.0, 1.0])):
        assert err[inner].mean() < 0.4 * _landing_error(rgb, rgb_next, wrong)[inner].mean()
    # on the moving objects the object motion matters: without it frame t+1 is sampled at the wrong places
    assert err[objects].mean() < 0.25 * _landing_error(rgb, rgb_next, camera_only.flow)[objects].mean()
    assert np.linalg.norm(gt.flow - camera_only.flow, axis=-1)[objects].mean() > 1.0


def test_occlusions_agree_with_the_next_depth_buffer():
    scene, next_scene = _moving_clip()
    hits = cast_rays(scene, CAMERA)
    gt = ground_truth_flow(scene, hits, next_scene, CAMERA)
    after = cast_rays(next_scene, CAMERA)
    u, v = _pixel_grid()
    u1, v1 = u + gt.flow[..., 0], v + gt.flow[..., 1]
    inside = (u1 >= -0.5) & (u1 < CAMERA.width - 0.5) & (v1 >= -0.5) & (v1 < CAMERA.height - 0.5)
    assert np.array_equal(gt.occlusion == OUT_OF_VIEW, ~inside) and (~inside).sum() > 50  # the camera moved
    r, c = np.clip(np.rint(v1), 0, CAMERA.height - 1).astype(int), np.clip(np.rint(u1), 0, CAMERA.width - 1).astype(int)
    same_surface = after.surface[r, c] == hits.surface
    hidden, visible = gt.occlusion == HIDDEN, gt.occlusion == VISIBLE
    assert hidden.sum() > 30  # the box and the ball cover some floor and wall as they move
    assert (~same_surface[hidden]).mean() > 0.9  # something else is seen where a hidden point lands...
    assert same_surface[visible].mean() > 0.97  # ...and the point's own surface where a visible one does
    z = next_scene.camera.to_local(moved_points(scene, next_scene, hits))[2]  # depth of the moved points at t+1
    assert (after.depth[r, c] < 0.99 * z)[hidden].mean() > 0.9  # the depth buffer there is in front of them
    assert (np.abs(after.depth[r, c] - z) < 0.01 * z)[visible].mean() > 0.97


def test_ray_depths_at_pixel_centres_are_the_depth_buffer():
    scene = _scene(_objects())
    hits = cast_rays(scene, CAMERA)
    u, v = _pixel_grid()
    np.testing.assert_allclose(ray_depths(scene, CAMERA, u.ravel(), v.ravel()).reshape(u.shape), hits.depth,
                               rtol=1e-12)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_gt")
    generate_synth(out, TINY, workers=1, progress=False)
    return out


def test_every_flow_frame_has_its_ground_truth_files(tiny_dir):
    m = read_manifest(tiny_dir / "manifest.jsonl")
    flow_frames = [f for f in m if f.rgb_next is not None]
    assert len(flow_frames) == (TINY.splits.flow_transfer + TINY.splits.flow_train + TINY.splits.flow_test
                                + TINY.splits.flow_val)
    assert all(f.flow_gt is None and f.flow_occlusion is None for f in m if f.rgb_next is None)
    for f in flow_frames:
        split, index = f.id.split(".")[1], int(f.id.split(".")[2])
        gt = synthesize_frame(TINY, split, index).flow_gt
        flow, known = read_flow_png(m.path(f.flow_gt))
        assert np.abs(flow - gt.flow).max() <= 1 / 128 + 1e-6 and known.all()  # 1/64-pixel steps
        assert np.array_equal(read_occlusion(m.path(f.flow_occlusion)), gt.occlusion)
        assert gt.valid.mean() > 0.8 and np.abs(gt.flow).max() > 0.5


def test_a_flow_frame_made_before_ground_truth_is_remade(tiny_dir, tmp_path):
    import shutil

    out = tmp_path / "old"
    shutil.copytree(tiny_dir, out)
    fid = frame_id("flow_test", 1)
    record = out / "records" / f"{fid}.json"
    old = {k: v for k, v in json.loads(record.read_text()).items() if k not in ("flow_gt", "flow_occlusion")}
    record.write_text(json.dumps(old))
    (out / "flow_gt" / f"{fid}.png").unlink()
    generate_synth(out, TINY, workers=1, progress=False)
    assert (out / "flow_gt" / f"{fid}.png").is_file()
    assert read_manifest(out / "manifest.jsonl")[fid].flow_gt == f"flow_gt/{fid}.png"


def test_read_occlusion_rejects_what_is_not_a_code_map(tmp_path):
    from shared.imageio import write_image

    write_image(tmp_path / "rgb.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DataError, match="single-channel"):
        read_occlusion(tmp_path / "rgb.png")
    write_image(tmp_path / "bad.png", np.full((4, 5), 9, np.uint8))
    with pytest.raises(DataError, match="value 9"):
        read_occlusion(tmp_path / "bad.png")


def _close(rgb, reference):
    """Equal, up to one grey level on a few pixels (see the test below)."""
    diff = np.abs(rgb.astype(np.int16) - reference)
    return diff.max() <= 1 and (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("motion", [MotionConfig(), MotionConfig(camera_step_px=(3, 5), class_motion=True)])
def test_frame_t_of_the_flow_splits_is_as_rendered_before_ground_truth_and_motion_changes(motion):
    """RGB at t, the teacher's input, against frames rendered at commit aeeed1e (before this work), whatever the
    motion; with the default motion, frame t+1 too (the original clips).

    On the host that made the reference the frames are byte-identical; another CPU's libm may round a
    shading value differently, so one grey level on a few pixels is tolerated.
    """
    reference = np.load(REFERENCE)
    names = [k for k in reference.files if k.count(".") == 2]
    assert len(names) == 6
    config = TINY.model_copy(update={"motion": motion})
    for name in names:
        _, split, index = name.split(".")
        frame = synthesize_frame(config, split, int(index))
        assert _close(frame.rgb, reference[name]), name
        if f"{name}.next" in reference.files:
            assert _close(frame.rgb_next, reference[f"{name}.next"]) == (motion == MotionConfig()), name


def test_read_synth_config_gives_back_the_config_that_made_the_folder(tiny_dir, tmp_path):
    from shared.errors import ConfigError
    from xmodal_data.synth.dataset import read_synth_config

    assert read_synth_config(tiny_dir) == TINY
    with pytest.raises(ConfigError, match="not a finished synth dataset"):
        read_synth_config(tmp_path)


def test_flow_image_manifest_from_ground_truth_and_from_an_estimator(tiny_dir, tmp_path):
    import shutil

    from shared.flow_image import encode_flow_image, flip_flow
    from shared.imageio import read_rgb
    from xmodal_data.encode import flow_image_manifest
    from xmodal_data.flow import compute_flow

    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data)
    original = read_manifest(data / "manifest.jsonl")
    gt_path = flow_image_manifest(data / "manifest.jsonl", "gt", workers=1, progress=False)
    fine_path = flow_image_manifest(data / "manifest.jsonl", "dis-fine", workers=1, progress=False)
    assert (gt_path.name, fine_path.name) == ("manifest_gtflow.jsonl", "manifest_dis_fineflow.jsonl")
    gt, fine = read_manifest(gt_path), read_manifest(fine_path)
    for f in original:
        a, b = gt[f.id], fine[f.id]
        keep = {"flow": f.flow, "flow_mirror": f.flow_mirror}
        assert a.model_copy(update=keep) == f == b.model_copy(update=keep)
        if f.rgb_next is None:
            assert a.flow is None and b.flow is None
            continue
        assert a.flow == f"flow_gt_image/{f.id}.png"
        flow, _ = read_flow_png(original.path(f.flow_gt))
        np.testing.assert_array_equal(read_rgb(gt.path(a.flow)), encode_flow_image(flow))
        np.testing.assert_array_equal(read_rgb(gt.path(a.flow_mirror)), encode_flow_image(flip_flow(flow)))
        rgb_t, rgb_t1 = read_rgb(original.path(f.rgb)), read_rgb(original.path(f.rgb_next))
        estimate = compute_flow(rgb_t, rgb_t1, "dis-fine")
        np.testing.assert_array_equal(read_rgb(fine.path(b.flow)), encode_flow_image(estimate))
        mirrored = compute_flow(np.ascontiguousarray(rgb_t[:, ::-1]), np.ascontiguousarray(rgb_t1[:, ::-1]), "dis-fine")
        np.testing.assert_array_equal(read_rgb(fine.path(b.flow_mirror)), encode_flow_image(mirrored))
    with pytest.raises(ValueError, match="'raft'"):
        flow_image_manifest(data / "manifest.jsonl", "raft")


def test_flow_image_manifest_from_ground_truth_needs_it(tiny_dir, tmp_path):
    from shared.manifest import write_manifest
    from xmodal_data.encode import flow_image_manifest

    m = read_manifest(tiny_dir / "manifest.jsonl")
    clips = [f.model_copy(update={"flow_gt": None, "flow_occlusion": None}) for f in m if f.rgb_next]
    path = write_manifest(tmp_path / "m.jsonl", m.header, clips)
    with pytest.raises(DataError, match=r"12 clips have no flow_gt, e\.g\. 'synth\.flow_transfer\.0000000'"):
        flow_image_manifest(path, "gt")
