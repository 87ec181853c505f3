"""Data of the detector: labelled frames with proposals, image scaling and flips, training and evaluation batches.

Coordinates: boxes and proposals are in the frame's pixels (:mod:`shared.boxes` convention) until an image is
loaded; :func:`load_frame` then flips (image, boxes and proposals together; a flow image has u negated by its
preset) and resizes (everything scaled by the same factors). Training batches follow
:class:`~student_trainer.transfer_data.BatchSchedule`, a pure function of (seed, step), so a resumed run sees
the batches and flips of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from shared.boxes import clip_boxes, flip_boxes, scale_boxes
from shared.errors import ConfigError, DataError
from shared.imageio import read_rgb
from shared.manifest import Manifest
from shared.modalities import Modality
from student_trainer.transfer_data import BatchSchedule
from student_trainer.worker_errors import WorkerFailure, worker_safe

__all__ = [
    "DetectFrame",
    "EvalFrames",
    "LoadedFrame",
    "TrainBatches",
    "detect_frames",
    "ground_truth",
    "load_frame",
    "pad_images",
    "resize_factor",
    "split_ground_truth",
]


@dataclass(frozen=True)
class DetectFrame:
    """One labelled frame: its modality image, boxes and proposals, in the frame's pixels.

    Attributes:
        id: frame id. image: path of the modality image. size: (height, width) of the RGB frame.
        mirrored: path of the modality image of the mirrored inputs (flow of the mirrored pair), if recorded.
        boxes: (M, 4) float32; labels: (M,) int64 0-based class indices; difficult: (M,) bool.
        proposals: (N, 4) float32, clipped to the frame, boxes under 1 pixel wide or high removed.
    """

    id: str
    image: str
    size: tuple[int, int]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    proposals: np.ndarray
    mirrored: str | None = None


@dataclass(frozen=True)
class LoadedFrame:
    """A frame ready for the network: image (3, h, w) normalised; boxes and proposals in its pixels."""

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    proposals: torch.Tensor
    scale: tuple[float, float]  # (sx, sy): input pixels per frame pixel


def detect_frames(
    manifest: Manifest,
    splits: Sequence[str],
    modality: Modality,
    proposals: Mapping[str, np.ndarray],
    max_proposals: int,
) -> list[DetectFrame]:
    """The labelled frames of ``splits`` with their modality image and proposals.

    Raises:
        ConfigError: no labelled frame in the splits.
        DataError: frames without the modality image, or without proposals (names them).
    """
    records = [f for f in manifest.split(*splits) if f.labeled]
    if not records:
        raise ConfigError(f"{manifest.source}: no labelled frames in splits {list(splits)} "
                          f"(it has {manifest.splits()})")
    no_image = [f.id for f in records if not modality.image_path(f)]
    if no_image:
        raise DataError(f"{len(no_image)} frame(s) of {list(splits)} have no {modality.name} image, e.g. "
                        f"{no_image[:3]}; run `xmodal-data encode {manifest.source}` first")
    no_props = [f.id for f in records if f.id not in proposals]
    if no_props:
        raise DataError(f"{len(no_props)} frame(s) of {list(splits)} have no proposals, e.g. {no_props[:5]}; "
                        "generate proposals for every frame of the splits")
    classes = {name: k for k, name in enumerate(manifest.classes)}
    out = []
    for f in records:
        objs = list(f.objects or ())
        unknown = [o.label for o in objs if o.label not in classes]
        if unknown:
            raise DataError(f"frame {f.id!r}: labels {unknown} are not in the manifest's classes")
        size = _frame_size(manifest, f)
        props = np.asarray(proposals[f.id], dtype=np.float32).reshape(-1, 4)[:max_proposals]
        props = clip_boxes(props, size)
        props = props[((props[:, 2] - props[:, 0]) >= 1) & ((props[:, 3] - props[:, 1]) >= 1)]
        image, mirrored = modality.image_path(f), modality.image_path(f, mirrored=True)
        out.append(DetectFrame(
            id=f.id, image=str(manifest.path(image)), size=size,
            mirrored=str(manifest.path(mirrored)) if mirrored != image else None,
            boxes=np.array([o.box for o in objs], np.float32).reshape(-1, 4),
            labels=np.array([classes[o.label] for o in objs], np.int64),
            difficult=np.array([o.difficult for o in objs], bool),
            proposals=np.ascontiguousarray(props),
        ))
    return out


def _frame_size(manifest: Manifest, frame) -> tuple[int, int]:
    if frame.intrinsics is not None:
        return frame.intrinsics.height, frame.intrinsics.width
    h, w = read_rgb(manifest.path(frame.rgb)).shape[:2]
    return h, w


def ground_truth(frames: Sequence[DetectFrame]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{frame id: (boxes, labels, difficult)}``, the evaluator's ground truth."""
    return {f.id: (f.boxes, f.labels, f.difficult) for f in frames}


def split_ground_truth(manifest: Manifest, split: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The evaluator's ground truth of every labelled frame of ``split``, straight from the manifest.

    Raises:
        ConfigError: the split has no labelled frame.
    """
    classes = {name: k for k, name in enumerate(manifest.classes)}
    gt = {
        f.id: (np.array([o.box for o in f.objects or ()], np.float64).reshape(-1, 4),
               np.array([classes[o.label] for o in f.objects or ()], np.int64),
               np.array([o.difficult for o in f.objects or ()], bool))
        for f in manifest.split(split) if f.labeled
    }
    if not gt:
        raise ConfigError(f"{manifest.source}: split {split!r} has no labelled frames (it has {manifest.splits()})")
    return gt


def resize_factor(size: tuple[int, int], short_side: int | None, max_side: int) -> float:
    """Fast R-CNN's scale: shorter side to ``short_side`` unless the longer one would pass ``max_side``."""
    if short_side is None:
        return 1.0
    h, w = size
    return min(short_side / min(h, w), max_side / max(h, w))


def load_frame(
    frame: DetectFrame, modality: Modality, flip: bool = False, short_side: int | None = None,
    max_side: int = 2000,
) -> LoadedFrame:
    """Read, flip and resize one frame; boxes and proposals follow the image.

    Labels of the result are 1-based (0 is the detector's background).

    Raises:
        DataError: the modality image's size differs from the frame's (names the file).
    """
    path = frame.mirrored if flip and frame.mirrored else frame.image
    img = modality.read(path)
    if img.shape[:2] != frame.size:
        raise DataError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, frame {frame.id!r} is "
                        f"{frame.size[1]}x{frame.size[0]} (boxes and proposals are in frame pixels)")
    boxes, props = frame.boxes, frame.proposals
    if flip:
        if path == frame.image:
            img = modality.flip(img)
        boxes, props = flip_boxes(boxes, frame.size[1]), flip_boxes(props, frame.size[1])
    s = resize_factor(frame.size, short_side, max_side)
    sx = sy = 1.0
    if s != 1.0:
        h, w = round(frame.size[0] * s), round(frame.size[1] * s)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        sx, sy = w / frame.size[1], h / frame.size[0]
        boxes, props = scale_boxes(boxes, (sx, sy)), scale_boxes(props, (sx, sy))
    return LoadedFrame(modality.to_tensor(img), torch.from_numpy(np.ascontiguousarray(boxes)),
                       torch.from_numpy(frame.labels + 1), torch.from_numpy(np.ascontiguousarray(props)), (sx, sy))


def pad_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (3, h, w) images into (B, 3, H, W), zero-padded (the normalised mean) at the bottom and right."""
    h = max(x.shape[1] for x in images)
    w = max(x.shape[2] for x in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, x in enumerate(images):
        out[i, :, : x.shape[1], : x.shape[2]] = x
    return out


class TrainBatches(Dataset):
    """Item ``k`` = training step ``first_step + k``: (images (B, 3, H, W), frames, step).

    ``frames`` are the B :class:`LoadedFrame` (boxes, 1-based labels and proposals in input pixels); difficult
    boxes are left out of training, as in Fast R-CNN.
    """

    def __init__(
        self, frames: Sequence[DetectFrame], modality: Modality, schedule: BatchSchedule, steps: int,
        first_step: int, short_side: int | None = None, max_side: int = 2000,
    ) -> None:
        if not frames:
            raise ValueError("need at least one training frame")
        self.frames, self.modality, self.schedule = list(frames), modality, schedule
        self.steps, self.first_step = steps, first_step
        self.short_side, self.max_side = short_side, max_side

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, list[LoadedFrame], int] | WorkerFailure:
        return worker_safe(self._item, k)

    def _item(self, k: int) -> tuple[torch.Tensor, list[LoadedFrame], int]:
        step = self.first_step + k
        idx, flips = self.schedule.batch(step)
        loaded = []
        for i, f in zip(idx.tolist(), flips.tolist(), strict=True):
            fr = load_frame(self.frames[i], self.modality, f, self.short_side, self.max_side)
            keep = torch.from_numpy(~self.frames[i].difficult)
            loaded.append(LoadedFrame(fr.image, fr.boxes[keep], fr.labels[keep], fr.proposals, fr.scale))
        return pad_images([f.image for f in loaded]), loaded, step


class EvalFrames(Dataset):
    """Item ``i``: frame ``i`` unflipped, as a :class:`LoadedFrame`; batch with ``collate_fn=list``."""

    def __init__(self, frames: Sequence[DetectFrame], modality: Modality, short_side: int | None = None,
                 max_side: int = 2000) -> None:
        self.frames, self.modality, self.short_side, self.max_side = list(frames), modality, short_side, max_side

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> LoadedFrame:
        return load_frame(self.frames[i], self.modality, False, self.short_side, self.max_side)
