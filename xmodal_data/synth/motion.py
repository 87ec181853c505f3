"""How a flow clip moves from frame t to t+1: the objects' motion and the camera's.

Frame t never depends on these settings (its scene and RGB noise come from other generators than the motion),
so the RGB frames the teacher sees are the same whatever the motion.

Camera motion is a small shake (rotation and translation noise) plus, optionally, a deliberate step: a
translation in a random horizontal direction (sideways and/or forward), as a hand-held or walking camera
makes. A translating camera gives parallax: flow ``f * t / Z`` grows with nearness, so flow edges appear at every
depth edge and the flow field inside an object follows its 3-D shape (flow then carries what depth carries).

Object motion: every labelled object slides on the floor and turns about the vertical (clutter stays put).
With ``class_motion``, each class moves in its own way instead (the synthetic counterpart of actions, whose
classes are their motion): spheres roll (rotation about the horizontal axis across their travel, without
slipping), lying capsules roll across their long axis, upright cylinders and cones spin about their axis
in place, boxes slide without turning, tables stand still.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.camera import Intrinsics
from xmodal_data.synth.geometry import Pose, rot_x, rot_y, rot_z
from xmodal_data.synth.scene import Scene, SceneObject
from xmodal_data.synth.shapes import Capsule, Sphere

__all__ = ["CAMERA_STEP_DEPTH_M", "MotionConfig", "move_objects"]

CAMERA_STEP_DEPTH_M = 3.0
"""The camera step is given as the flow (pixels) it gives a point this far ahead (metres; objects stand at
1.6–4.2 m): ``step_m = px * CAMERA_STEP_DEPTH_M / fx``, so one setting means the same image motion at any
resolution."""


def _range(lo_hi: tuple[float, float], name: str) -> None:
    lo, hi = lo_hi
    if not 0 <= lo <= hi:
        raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got ({lo}, {hi})")


class MotionConfig(BaseModel):
    """The motion of a flow clip between t and t+1 (defaults: the original benchmark's clips)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    object_px: tuple[float, float] = Field(
        (2.0, 5.0), description="image motion of a moving object's base, pixels at its depth (uniform range)")
    object_turn_deg: tuple[float, float] = Field((2.0, 8.0), description="its turn about the vertical, degrees")
    camera_shake_m: float = Field(0.004, ge=0, description="camera translation noise, std per axis, metres")
    camera_shake_deg: float = Field(0.15, ge=0, description="camera rotation noise, std per axis, degrees")
    camera_step_px: tuple[float, float] = Field(
        (0.0, 0.0), description="camera translation, as the flow it gives a point 3 m ahead, pixels (uniform range)")
    camera_step_deg: float = Field(
        30.0, ge=0, le=90, description="largest angle of the step's direction from sideways, towards forward or "
        "back, degrees (uniform; 0 = purely sideways)")
    class_motion: bool = Field(False, description="each class moves in its own way (module docstring)")

    @model_validator(mode="after")
    def _ranges(self) -> MotionConfig:
        for name in ("object_px", "object_turn_deg", "camera_step_px"):
            _range(getattr(self, name), name)
        return self


def _about(pose: Pose, rotation: np.ndarray, centre: np.ndarray, shift: np.ndarray) -> Pose:
    """``pose`` rotated by world ``rotation`` about the world point ``centre``, then shifted by ``shift``."""
    return Pose(rotation=rotation @ pose.rotation, position=rotation @ (pose.position - centre) + centre + shift)


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about the unit ``axis`` (Rodrigues), (3, 3)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _class_move(obj: SceneObject, step: float, heading: float, turn: float) -> Pose:
    """The pose one frame later of a labelled object moving as its class does (see the module docstring).

    Args:
        step: distance its base travels, metres; heading: direction of travel in the floor plane, radians;
        turn: signed spin angle, radians (rolling angles follow from ``step`` instead).
    """
    pose, shape, offset = obj.pose, obj.parts[0].shape, np.asarray(obj.parts[0].offset)
    centre = pose.rotation @ offset + pose.position  # the first part's centre, world metres
    up = np.array([0.0, 1.0, 0.0])
    if obj.label == "sphere" and isinstance(shape, Sphere):
        direction = np.array([math.cos(heading), 0.0, math.sin(heading)])
        axis = np.cross(up, direction)
        return _about(pose, _axis_angle(axis, step / shape.radius), centre, step * direction)
    if obj.label == "capsule" and isinstance(shape, Capsule):
        axis = pose.rotation[:, 0]  # the long axis, horizontal for a lying capsule
        direction = np.cross(axis, up)  # across it
        return _about(pose, _axis_angle(axis, step / shape.radius), centre, step * direction)
    if obj.label in ("cylinder", "cone"):
        return _about(pose, rot_y(4 * turn), pose.position, np.zeros(3))  # spin in place, faster than a turn
    if obj.label == "table":
        return pose
    direction = np.array([math.cos(heading), 0.0, math.sin(heading)])
    return Pose(rotation=pose.rotation, position=pose.position + step * direction)  # boxes (and any other) slide


def move_objects(scene: Scene, rng: np.random.Generator, intrinsics: Intrinsics, motion: MotionConfig) -> Scene:
    """The scene one video frame later (``rng``: the clip's motion generator, nothing else draws from it).

    The draws of the default settings come first and in the original order, so a clip made with the defaults
    is the clip the benchmark always had.
    """
    objects = []
    for obj in scene.objects:
        if obj.label is None:
            objects.append(obj)
            continue
        z_cam = max(float(scene.camera.to_local(obj.pose.position)[2]), 0.5)
        step = rng.uniform(*motion.object_px) * z_cam / intrinsics.fx
        heading = rng.uniform(0, 2 * math.pi)
        turn = math.radians(rng.uniform(*motion.object_turn_deg)) * rng.choice([-1.0, 1.0])
        if motion.class_motion:
            pose = _class_move(obj, step, heading, turn)
        else:
            pose = Pose(
                rotation=rot_y(turn) @ obj.pose.rotation,
                position=obj.pose.position + step * np.array([math.cos(heading), 0.0, math.sin(heading)]),
            )
        objects.append(dataclasses.replace(obj, pose=pose))
    shake = [math.radians(a) for a in rng.normal(0.0, motion.camera_shake_deg, 3)]
    position = scene.camera.position + rng.normal(0.0, motion.camera_shake_m, 3)
    if motion.camera_step_px[1] > 0:
        step = rng.uniform(*motion.camera_step_px) * CAMERA_STEP_DEPTH_M / intrinsics.fx
        angle = math.radians(rng.uniform(-motion.camera_step_deg, motion.camera_step_deg))
        side = rng.choice([-1.0, 1.0])
        direction_cam = np.array([side * math.cos(angle), 0.0, math.sin(angle)])  # x right, z forward
        direction_world = scene.camera.to_world_dirs(direction_cam)
        direction_world[1] = 0.0  # a level step: the camera keeps its height
        position = position + step * direction_world / max(np.linalg.norm(direction_world), 1e-12)
    camera = Pose(rotation=scene.camera.rotation @ rot_x(shake[0]) @ rot_y(shake[1]) @ rot_z(shake[2]),
                  position=position)
    return dataclasses.replace(scene, camera=camera, objects=tuple(objects))
