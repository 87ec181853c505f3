"""The ImageNet-like RGB teacher: a trunk trained to classify object crops of separate labelled renders.

The paper's teachers were trained on ImageNet — a far larger, broader labelled set than the detection task — and
only then (optionally) fine-tuned on the target task's RGB (the "adapted" teacher). On the synthetic set that
role is played by the ``pretrain-*`` renders (their own scenes, 36 shape x look labels, the look independent of
the shape): every labelled object becomes a square crop of its box with some context, resized to ``crop_size``
(object-centric, as ImageNet images are), and the trunk + global average pooling + one linear layer learn to name
it. The checkpoint carries the trunk's description and ``trunk.*`` weights, so it is a teacher (``teacher-server
precompute --arch checkpoint``), a copy-RGB source and a detector init (``detect --init copy-rgb``) as it is.

A run folder holds ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (atomic, resumable with ``--resume``),
then ``eval.json`` (top-1 accuracy on the test split, overall and per class) and ``summary.json`` (last).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared.atomic import write_json_atomic
from shared.device import autocast_dtype, select_device
from shared.errors import ConfigError
from shared.manifest import FrameRecord, Manifest, read_manifest
from shared.modalities import modality
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.checkpoint import git_revision, load_checkpoint, save_checkpoint
from student_trainer.classify_settings import ClassifySettings
from student_trainer.engine import StepResult, TrainLoop, evaluate, rng_state
from student_trainer.logs import MetricsLog, check_same_run, read_metrics, write_run_config
from student_trainer.optim import make_optimizer
from student_trainer.transfer_data import BatchSchedule
from student_trainer.worker_errors import WorkerFailure, worker_safe

__all__ = ["CropClassifier", "Crops", "crop_object", "load_crops", "run_classify"]

_RGB = modality("rgb")


class CropClassifier(nn.Module):
    """Trunk (conv1..pool5), global average pooling, one linear layer: pool5 itself must name the object."""

    def __init__(self, trunk: AlexNetTrunk, n_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x).mean(dim=(2, 3)))


def crop_object(image: np.ndarray, box: tuple[float, float, float, float], size: int, context: float,
                scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A square crop around a box, resized to ``size`` x ``size`` (pixels outside the image repeat its border).

    Args:
        image: (H, W, 3) uint8.
        box: x1, y1, x2, y2 in pixel-edge coordinates (x2/y2 exclusive).
        size: output side, pixels.
        context: crop side / the box's longer side.
        scale, shift: augmentation: the side multiplied by ``scale``, the centre moved by ``shift`` (fractions of
            the side, x and y).

    Returns:
        (size, size, 3) uint8.
    """
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * context * scale
    cx, cy = (x1 + x2) / 2 + shift[0] * side, (y1 + y2) / 2 + shift[1] * side
    a = size / side  # output pixel (u, v) samples input (cx + (u + 0.5) / a - side / 2 - 0.5, ...)
    m = np.array([[a, 0.0, (side / 2 - cx) * a - 0.5 + a * 0.5], [0.0, a, (side / 2 - cy) * a - 0.5 + a * 0.5]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class Crops:
    """Every usable labelled object of some frames: the frames' images and, per object, its frame, box, class."""

    images: list[np.ndarray]
    frame: np.ndarray  # (N,) int64 index into images
    boxes: np.ndarray  # (N, 4) float64
    labels: np.ndarray  # (N,) int64 0-based class indices

    def __len__(self) -> int:
        return len(self.labels)


def load_crops(manifest: Manifest, frames: list[FrameRecord], min_box: int) -> Crops:
    """Read the frames' RGB once and list their objects whose box is at least ``min_box`` on one side.

    Raises:
        ConfigError: no usable object in ``frames``.
    """
    index = {c: i for i, c in enumerate(manifest.classes)}
    images, where, boxes, labels = [], [], [], []
    for f in frames:
        objs = [o for o in f.objects or () if max(o.box[2] - o.box[0], o.box[3] - o.box[1]) >= min_box]
        if not objs:
            continue
        images.append(_RGB.read(manifest.path(f.rgb)))
        for o in objs:
            where.append(len(images) - 1)
            boxes.append(o.box)
            labels.append(index[o.label])
    if not labels:
        raise ConfigError(f"{manifest.source}: no labelled object of at least {min_box} px in "
                          f"{len(frames)} frames of splits {sorted({f.split for f in frames})}")
    return Crops(images, np.asarray(where, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4),
                 np.asarray(labels, np.int64))


class CropBatches(Dataset):
    """Item ``k`` = training step ``first_step + k``: crops (B, 3, S, S) normalised as RGB, labels (B,), the step.
    The batch, its flips and its jitter are a pure function of (seed, step), so a resumed run sees what an
    uninterrupted one would."""

    def __init__(self, crops: Crops, s: ClassifySettings, steps: int, first_step: int) -> None:
        self.crops, self.s, self.steps, self.first = crops, s, steps, first_step
        self.schedule = BatchSchedule(len(crops), s.batch_size, s.seed, s.flip)

    def __len__(self) -> int:
        return max(0, self.steps - self.first)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int] | WorkerFailure:
        return worker_safe(self._item, k)

    def _item(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        step, s, c = self.first + k, self.s, self.crops
        idx, flips = self.schedule.batch(step)
        jit = np.random.default_rng([s.seed, 104729, step]).uniform(-1, 1, (len(idx), 3)) * s.jitter
        xs = []
        for i, f, (ds, dx, dy) in zip(idx, flips, jit, strict=True):
            img = crop_object(c.images[c.frame[i]], tuple(c.boxes[i]), s.crop_size, s.context, 1 + ds, (dx, dy))
            xs.append(_RGB.to_tensor(_RGB.flip(img) if f else img))
        return torch.stack(xs), torch.from_numpy(c.labels[idx]), step


def _accuracy(model: CropClassifier, crops: Crops, s: ClassifySettings, device: torch.device,
              amp: torch.dtype | None, n_classes: int) -> dict[str, Any]:
    """Top-1 accuracy on centred crops (no jitter, no flips): overall and the mean over classes present."""
    rows = [range(i, min(i + 256, len(crops))) for i in range(0, len(crops), 256)]

    def predict(m: nn.Module, r: range) -> np.ndarray:
        x = torch.stack([_RGB.to_tensor(crop_object(crops.images[crops.frame[i]], tuple(crops.boxes[i]),
                                                    s.crop_size, s.context)) for i in r])
        return m(x.to(device, memory_format=torch.channels_last)).argmax(1).cpu().numpy()

    pred = np.concatenate(evaluate(model, rows, device, amp, predict))
    right = pred == crops.labels
    per_class = {int(c): float(right[crops.labels == c].mean()) for c in range(n_classes) if (crops.labels == c).any()}
    return {"accuracy": float(right.mean()), "mean_class_accuracy": float(np.mean(list(per_class.values()))),
            "per_class": per_class, "crops": len(crops)}


def _checkpoint(model: CropClassifier, opt, sched, step: int, s: ClassifySettings, classes: list[str],
                device: torch.device, git: str) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "rng": rng_state(device), "config": json.loads(s.model_dump_json()), "git": git,
            "trunk": model.trunk.describe(_RGB.mean, _RGB.std), "modality": "rgb", "classes": classes,
            "task": "classify"}


def run_classify(s: ClassifySettings) -> dict[str, Any]:
    """Train (or resume) the crop classifier, then measure its test accuracy; returns the summary (also
    ``summary.json``).

    Raises:
        ConfigError: the manifest has no classes or no usable objects in a split; a ``--resume`` checkpoint of
            other classes.
    """
    manifest = read_manifest(s.manifest)
    if not manifest.classes:
        raise ConfigError(f"{s.manifest}: the header lists no classes")
    train = load_crops(manifest, manifest.split(*s.train_splits), s.min_box)
    test = load_crops(manifest, manifest.split(s.test_split), s.min_box)
    device = select_device(s.device)
    torch.manual_seed(s.seed)
    model = CropClassifier(AlexNetTrunk(trunk_spec(s.trunk, **s.trunk_overrides())), len(manifest.classes))
    model.to(device, memory_format=torch.channels_last)
    ckpt_path = s.out / "checkpoint.pt"
    if s.resume:
        check_same_run(s, "a crop classifier run", resume=True)
    state = load_checkpoint(ckpt_path) if s.resume and ckpt_path.is_file() else None
    if state and state.get("classes") != manifest.classes:
        raise ConfigError(f"{ckpt_path} classifies {len(state.get('classes') or [])} other classes; this run has "
                          f"{len(manifest.classes)} ({s.manifest})")
    first = int(state["step"]) if state else 0
    opt, sched = make_optimizer(model, s, state)
    write_run_config(s.out, {"settings": json.loads(s.model_dump_json()), "classes": manifest.classes,
                             "trunk": model.trunk.spec.model_dump(), "train_crops": len(train),
                             "test_crops": len(test)})
    metrics = MetricsLog(s.out / "metrics.jsonl", resume_step=first if state else None)
    loader = DataLoader(CropBatches(train, s, s.iterations, first), batch_size=None, num_workers=s.loader_workers)
    amp, git = autocast_dtype(device, s.amp), git_revision()

    def step_fn(batch: list[torch.Tensor], step: int) -> StepResult:
        x, y = batch[0].to(device, memory_format=torch.channels_last), batch[1].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        return StepResult(loss, {"accuracy": (logits.detach().argmax(1) == y).float().mean().item()})

    save = lambda step: save_checkpoint(ckpt_path, _checkpoint(model, opt, sched, step, s, manifest.classes,  # noqa: E731
                                                               device, git))
    loop = TrainLoop(model, opt, sched, step_fn, device, amp, save=save, log=metrics.write, log_every=s.log_every,
                     checkpoint_every=s.checkpoint_every, desc="classify", progress=s.progress,
                     postfix=("loss", "accuracy"))
    t0 = time.perf_counter()
    last = loop.run(loader, first, s.iterations, resume_rng=state["rng"] if state else None)
    metrics.close()
    if s.iterations == 0 or first >= s.iterations:  # nothing trained in this call: write / keep the checkpoint
        save(max(first, s.iterations))
        done = read_metrics(s.out / "metrics.jsonl") if (s.out / "metrics.jsonl").is_file() else []
        last = done[-1] if done else {}
    t1 = time.perf_counter()
    result = _accuracy(model, test, s, device, amp, len(manifest.classes))
    per_class = {manifest.classes[c]: a for c, a in result["per_class"].items()}
    write_json_atomic(s.out / "eval.json", {"split": s.test_split, **result, "per_class": per_class})
    summary = {"task": "classify", "train_splits": s.train_splits, "test_split": s.test_split,
               "classes": len(manifest.classes), "train_crops": len(train), "test_crops": len(test),
               "iterations": s.iterations, "accuracy": result["accuracy"],
               "mean_class_accuracy": result["mean_class_accuracy"], "final": last,
               "train_seconds": round(t1 - t0, 2), "eval_seconds": round(time.perf_counter() - t1, 2),
               "device": str(device)}
    write_json_atomic(s.out / "summary.json", summary)  # written last: its existence means "done"
    return summary
