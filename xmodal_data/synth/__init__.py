"""The built-in paired dataset ``synth``: ray-cast room scenes with RGB, depth, Kinect-like raw depth,
video pairs for flow with their exact ground-truth flow and occlusions, and boxes from occlusion-aware
instance masks.

Entry point: :func:`generate_synth` with a :class:`SynthConfig` (``SynthConfig.profile("quick")``).
"""

from xmodal_data.synth.catalogue import SHAPE_CLASSES
from xmodal_data.synth.config import PROFILES, SPLIT_KINDS, SplitCounts, SynthConfig
from xmodal_data.synth.dataset import MANIFEST_NAME, generate_synth
from xmodal_data.synth.frames import SynthFrame, frame_id, synthesize_frame
from xmodal_data.synth.motion import MotionConfig

__all__ = [
    "MANIFEST_NAME",
    "PROFILES",
    "SHAPE_CLASSES",
    "SPLIT_KINDS",
    "MotionConfig",
    "SplitCounts",
    "SynthConfig",
    "SynthFrame",
    "frame_id",
    "generate_synth",
    "synthesize_frame",
]
