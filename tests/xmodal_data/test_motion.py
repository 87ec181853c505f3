"""Clip motion: camera steps, class-typical object motion, validation."""

import numpy as np
import pytest
from pydantic import ValidationError

from shared.camera import Intrinsics
from xmodal_data.synth.geometry import Pose, camera_pose, rot_y
from xmodal_data.synth.motion import CAMERA_STEP_DEPTH_M, MotionConfig, move_objects
from xmodal_data.synth.scene import Light, Material, Part, Plane, Scene, SceneObject
from xmodal_data.synth.shapes import Box, Capsule, Cone, Cylinder, Sphere

CAMERA = Intrinsics(fx=100.0, fy=100.0, cx=63.5, cy=47.5, width=128, height=96)
GREY = Material(colour=(0.5, 0.5, 0.5), colour2=(0.3, 0.3, 0.3))
STILL = {"camera_shake_m": 0.0, "camera_shake_deg": 0.0}


def _scene():
    def obj(label, x, z, part):
        return SceneObject(label, Pose(rot_y(0.3 * x), np.array([x, 0.0, z])), (part,), GREY)

    objects = (
        obj("sphere", -1.0, 3.0, Part(Sphere(0.3), (0.0, 0.3, 0.0))),
        obj("capsule", 0.0, 3.5, Part(Capsule(0.12, 0.3), (0.0, 0.12, 0.0))),
        obj("cylinder", 1.0, 3.0, Part(Cylinder(0.2, 0.8))),
        obj("cone", -0.5, 4.0, Part(Cone(0.3, 0.7))),
        obj("box", 0.6, 4.5, Part(Box((0.2, 0.3, 0.25)), (0.0, 0.3, 0.0))),
        obj("table", 1.5, 5.0, Part(Box((0.5, 0.02, 0.4)), (0.0, 0.7, 0.0))),
        obj(None, -1.5, 4.0, Part(Sphere(0.1), (0.0, 0.1, 0.0))),
    )
    light = Light(direction=np.array([0.0, 1.0, 0.0]), diffuse=0.7, ambient=0.3, colour=np.ones(3))
    camera = camera_pose(np.array([0.0, 1.3, 0.0]), yaw=0.1, pitch_down=0.25, roll=0.02)
    return Scene(camera=camera, planes=(Plane(np.array([0.0, 1.0, 0.0]), 0.0, GREY),), objects=objects, light=light)


def _world(pose, local):
    return pose.rotation @ np.asarray(local, dtype=np.float64) + pose.position


@pytest.mark.parametrize("seed", range(5))
def test_class_motion(seed):
    scene = _scene()
    moved = move_objects(scene, np.random.default_rng(seed), CAMERA, MotionConfig(class_motion=True, **STILL))
    before = {o.label: o for o in scene.objects}
    after = {o.label: o for o in moved.objects}
    up = np.array([0.0, 1.0, 0.0])

    # rolling without slipping: the centre travels r * angle, the contact point stays where it was
    for label, radius in (("sphere", 0.3), ("capsule", 0.12)):
        a, b = before[label], after[label]
        centre_a, centre_b = _world(a.pose, a.parts[0].offset), _world(b.pose, b.parts[0].offset)
        shift = centre_b - centre_a
        assert shift[1] == pytest.approx(0, abs=1e-12) and np.linalg.norm(shift) > 0.01
        contact = a.pose.to_local((centre_a - radius * up)[:, None])[:, 0]  # the material point touching the floor
        roll_axis = np.cross(up, shift / np.linalg.norm(shift))
        relative = b.pose.rotation @ a.pose.rotation.T
        angle = np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1))
        assert np.linalg.norm(shift) == pytest.approx(radius * angle, rel=1e-9)
        assert np.abs(relative @ roll_axis - roll_axis).max() < 1e-9  # it turns about the axis across its travel
        # the contact point's velocity is zero: to first order it stays put (exactly, its height stays 0)
        assert _world(b.pose, contact)[1] > -1e-12
    capsule_axis = before["capsule"].pose.rotation[:, 0]
    assert abs(capsule_axis @ (_world(after["capsule"].pose, (0, 0.12, 0)) - _world(before["capsule"].pose,
                                                                                      (0, 0.12, 0)))) < 1e-12
    # spinning in place about the vertical
    for label in ("cylinder", "cone"):
        a, b = before[label], after[label]
        np.testing.assert_allclose(b.pose.position, a.pose.position, atol=1e-12)
        relative = b.pose.rotation @ a.pose.rotation.T
        np.testing.assert_allclose(relative @ up, up, atol=1e-12)
        assert np.degrees(np.arccos(np.clip(relative[0, 0], -1, 1))) >= 8 - 1e-9  # 4x a 2-8 degree turn
    # boxes slide without turning; tables and clutter stand still
    np.testing.assert_array_equal(after["box"].pose.rotation, before["box"].pose.rotation)
    assert after["box"].pose.position[1] == 0 and not np.allclose(after["box"].pose.position,
                                                                  before["box"].pose.position)
    assert after["table"].pose is before["table"].pose and after[None] is before[None]


@pytest.mark.parametrize("seed", range(5))
def test_camera_step_is_a_level_translation_of_the_set_size(seed):
    scene = _scene()
    motion = MotionConfig(camera_step_px=(3.0, 5.0), camera_step_deg=20.0, **STILL)
    moved = move_objects(scene, np.random.default_rng(seed), CAMERA, motion)
    step = moved.camera.position - scene.camera.position
    assert step[1] == pytest.approx(0.0, abs=1e-12)
    lo, hi = (px * CAMERA_STEP_DEPTH_M / CAMERA.fx for px in motion.camera_step_px)
    assert lo - 1e-12 <= np.linalg.norm(step) <= hi + 1e-12
    sideways = scene.camera.rotation[:, 0].copy()
    sideways[1] = 0.0
    cos = abs(step @ sideways) / (np.linalg.norm(step) * np.linalg.norm(sideways))
    assert cos >= np.cos(np.radians(20.0)) - 0.02  # within 20 degrees of sideways (in the floor plane)
    np.testing.assert_array_equal(moved.camera.rotation, scene.camera.rotation)


def test_default_motion_has_no_camera_step():
    scene = _scene()
    moved = move_objects(scene, np.random.default_rng(0), CAMERA, MotionConfig(**STILL))
    np.testing.assert_array_equal(moved.camera.position, scene.camera.position)


@pytest.mark.parametrize("field", ["object_px", "object_turn_deg", "camera_step_px"])
def test_ranges_are_checked(field):
    with pytest.raises(ValidationError, match=field):
        MotionConfig(**{field: (3.0, 1.0)})
