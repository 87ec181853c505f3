"""One synthetic frame from (config, split, index): a pure function, no files.

Each frame draws from its own generator seeded by (seed, split, index), so frames can be made in any
order, in any process, and adding frames to one split never changes another.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from shared.manifest import ObjectBox
from xmodal_data.synth.config import SPLIT_KINDS, SynthConfig
from xmodal_data.synth.flow_gt import GroundTruthFlow, ground_truth_flow
from xmodal_data.synth.labels import visible_boxes
from xmodal_data.synth.motion import move_objects
from xmodal_data.synth.render import Hits, cast_rays
from xmodal_data.synth.sampling import sample_scene
from xmodal_data.synth.scene import Scene
from xmodal_data.synth.sensor import kinect_depth, rgb_camera
from xmodal_data.synth.shading import albedo_image, shade

__all__ = ["SynthFrame", "frame_id", "frame_rngs", "render_view", "synthesize_frame"]

_LUMA = np.array([0.2126, 0.7152, 0.0722])


@dataclass(frozen=True, eq=False)
class SynthFrame:
    """A frame's arrays and labels.

    Attributes:
        scene, hits: the scene at t and its ray-cast geometry (``hits.instance`` is the instance mask).
        rgb: (H, W, 3) uint8 at t. depth: (H, W) float64 clean z-depth, metres.
        raw_depth: (H, W) float64 Kinect-like depth, metres, 0 = missing (depth splits only, else None; ``rgb``
            splits keep ``depth`` only as the ray-cast geometry and write no depth files).
        next_scene, rgb_next: the scene and RGB at t+1 (flow splits only, else None).
        flow_gt: the exact flow t -> t+1 and its occlusion codes (flow splits only, else None).
        objects: visible labelled objects at t (None for unlabelled splits).
    """

    scene: Scene
    hits: Hits
    rgb: np.ndarray
    depth: np.ndarray
    raw_depth: np.ndarray | None
    next_scene: Scene | None
    rgb_next: np.ndarray | None
    flow_gt: GroundTruthFlow | None
    objects: list[ObjectBox] | None


def frame_id(split: str, index: int) -> str:
    """Frame id of frame ``index`` of ``split``, e.g. ``synth.depth_test.0000042``."""
    return f"synth.{split}.{index:07d}"


def frame_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Four independent generators (scene, RGB noise, depth noise, motion) for one frame."""
    sequence = np.random.SeedSequence([seed, zlib.crc32(split.encode()), index])
    return [np.random.default_rng(s) for s in sequence.spawn(4)]


def render_view(scene: Scene, config: SynthConfig, rng: np.random.Generator) -> tuple[Hits, np.ndarray, np.ndarray]:
    """Ray cast and shade ``scene``: (hits, albedo (H, W, 3) float64, rgb (H, W, 3) uint8)."""
    hits = cast_rays(scene, config.intrinsics())
    albedo = albedo_image(hits, scene)
    rgb = rgb_camera(shade(albedo, hits, scene.light), rng, config.rgb_noise)
    return hits, albedo, rgb


def synthesize_frame(config: SynthConfig, split: str, index: int) -> SynthFrame:
    """Frame ``index`` of ``split`` (see :data:`~xmodal_data.synth.config.SPLIT_KINDS` for what each split holds).

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLIT_KINDS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_KINDS)}")
    kind, labelled = SPLIT_KINDS[split]
    scene_rng, rgb_rng, depth_rng, motion_rng = frame_rngs(config.seed, split, index)
    intrinsics = config.intrinsics()
    scene = sample_scene(
        scene_rng, intrinsics, config.classes, config.objects_per_scene, config.clutter_per_scene,
        config.shared_appearance_prob,
    )
    hits, albedo, rgb = render_view(scene, config, rgb_rng)
    raw_depth = next_scene = rgb_next = flow_gt = None
    if kind == "depth":
        reflectance = albedo @ _LUMA
        raw_depth = kinect_depth(hits.depth, hits.cos_incidence, reflectance, intrinsics.fx, depth_rng, config.sensor)
    elif kind == "flow":
        next_scene = move_objects(scene, motion_rng, intrinsics, config.motion)
        rgb_next = render_view(next_scene, config, rgb_rng)[2]
        flow_gt = ground_truth_flow(scene, hits, next_scene, intrinsics)
    objects = None
    if labelled:
        labels = [config.object_label(o.label, o.look) for o in scene.objects]
        objects = visible_boxes(hits.instance, hits.amodal, labels, config.min_visible_pixels,
                                config.min_visible_fraction)
    return SynthFrame(
        scene=scene, hits=hits, rgb=rgb, depth=hits.depth, raw_depth=raw_depth, next_scene=next_scene,
        rgb_next=rgb_next, flow_gt=flow_gt, objects=objects,
    )
