"""Per-unit cost of the recipes' network and proposal stages on this machine, with FLOPs, for the README's
per-stage time estimates of ``xmodal-recipe nyud2`` / ``jhmdb`` at the paper's schedules.

Units (this process, torch on all cores unless ``--threads``; wall-clock seconds per unit, the best of
``--repeat`` runs after one warm-up; FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` on the same call,
a multiply-add counted as 2):

* ``teacher``: precompute's forward per frame, batch 8 (precompute runs it twice per frame: identity and mirror
  views): torchvision AlexNet and VGG16 ``features`` at 480x640 (NYUD2 raw) and 230x319 (UCF101 320x240 frames
  after the recipes' size search, :mod:`xmodal_pipeline.recipes.geometry`).
* ``student``: one transfer step per pair, batch 8: the AlexNet student (CaffeNet layout, conv1 padding from the
  trainer's search) + 1x1 adapter to the teacher's channels, MSE, backward, SGD step; per teacher and size.
* ``target decode``: a student's decode of one teacher map as stored (f32-zstd1) at 480x640.
* ``student input``: what a loader worker does per pair (one torch thread, as in a DataLoader worker): decode a
  480x640 / 240x320 PNG, resize, normalise.
* ``detector``: one Fast R-CNN iteration (torchvision-layout AlexNet trunk, fc 4096, dropout 0.5; 2 images,
  128 RoIs each, forward + backward + SGD) at NYUD2's 688x906 (the 425x560 crop at short side 688) and JHMDB's
  600x800 (240x320 at short side 600); ``detector eval``: one frame's forward over 2000 proposals.
* ``proposals``: one frame of the built-in generators, in this process with OpenCV on one thread (the
  generator runs one such process per core): ``hybrid`` (the paper profile's) and ``edge_boxes``, on a real
  NYUD2 frame (``../shared/data/nyud2_sample/gupta_demo_*``: RGB + HHA of its depth, 425x560) and a real video
  pair (``flow_pairs/sintel_*`` resized to 240x320: RGB + its DIS flow image).

Usage: python -m bench.recipe_costs [--repeat 3] [--threads N] [--units teacher ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.common import REPO, machine

SAMPLE = REPO.parent / "shared" / "data"
SIZES = {"nyud2 480x640": (480, 640), "ucf101 230x319": (230, 319)}
DETECTOR_SIZES = {"nyud2 688x906": (688, 906), "jhmdb 600x800": (600, 800)}


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: allocator, kernels, lazy inits
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def teacher_rows(repeat: int, batch: int = 8) -> list[dict]:
    rows = []
    for arch in ("alexnet", "vgg16"):
        features = torchvision.models.get_model(arch).features.eval()
        for name, hw in SIZES.items():
            x = torch.randn(batch, 3, *hw)

            def forward(features=features, x=x) -> None:
                with torch.inference_mode():
                    features(x)

            rows.append({"unit": "teacher forward", "arch": arch, "size": name,
                         "s_per_unit": _time(forward, repeat) / batch, "gflop_per_unit": _flops(forward) / batch / 1e9})
    return rows


def student_rows(repeat: int, batch: int = 8) -> list[dict]:
    from shared.nets.geometry import feature_size
    from shared.nets.trunks import AlexNetTrunk, trunk_spec
    from student_trainer.student import TransferModel, student_spec_for

    rows = []
    for arch, channels in (("alexnet", 256), ("vgg16", 512)):
        with torch.device("meta"):
            teacher = torchvision.models.get_model(arch).features
        for name, hw in SIZES.items():
            target_hw = feature_size(teacher, hw)
            model = TransferModel(AlexNetTrunk(student_spec_for(trunk_spec("alexnet"), hw, target_hw)), channels)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            x, y = torch.randn(batch, 3, *hw), torch.randn(batch, channels, *target_hw)

            def step(model=model, opt=opt, x=x, y=y) -> None:
                loss = nn.functional.mse_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

            rows.append({"unit": "student step", "arch": f"student of {arch}", "size": name,
                         "s_per_unit": _time(step, repeat) / batch, "gflop_per_unit": _flops(step) / batch / 1e9})
    return rows


def target_rows(repeat: int) -> list[dict]:
    """Client-side decode of one stored target map (f32-zstd1) of the real NYUD2 frame at 480x640; weights are
    random here (the ImageNet ones are not on this machine), so the zero fraction may differ from a trained
    teacher's."""
    from shared.features import decode_chunk, encode_chunk, encoding
    from shared.imageio import read_rgb
    from shared.modalities import modality

    enc = encoding("f32-zstd1")
    x = modality("rgb").to_tensor(cv2.resize(read_rgb(SAMPLE / "nyud2_sample" / "gupta_demo_rgb.png"), (640, 480)))
    rows = []
    for arch in ("alexnet", "vgg16"):
        with torch.inference_mode():
            fmap = torchvision.models.get_model(arch).features.eval()(x[None])[0].numpy()
        data = encode_chunk(fmap, enc)
        rows.append({"unit": "target decode", "arch": arch, "size": f"nyud2 480x640, map {fmap.shape}, "
                     f"{len(data) / 1e3:.0f} KB stored", "s_per_unit": _time(lambda d=data, f=fmap: decode_chunk(
                         d, f.shape, enc), repeat)})
    return rows


def input_rows(repeat: int, tmp: Path) -> list[dict]:
    from shared.imageio import read_rgb
    from shared.modalities import modality

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker (torch sets 1 thread there)

    rgb = cv2.resize(read_rgb(SAMPLE / "nyud2_sample" / "gupta_demo_rgb.png"), (640, 480))
    rows = []
    for name, hw in SIZES.items():
        native = (480, 640) if hw == (480, 640) else (240, 320)  # what the importers wrote
        path = tmp / f"{native[0]}.png"
        cv2.imwrite(str(path), cv2.resize(rgb, (native[1], native[0]))[..., ::-1])

        def load(path=path, hw=hw) -> None:
            img = cv2.resize(read_rgb(path), (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
            modality("hha").to_tensor(img)

        rows.append({"unit": "student input", "arch": "-", "size": name, "s_per_unit": _time(load, repeat)})
    torch.set_num_threads(threads)
    return rows


def detector_rows(repeat: int) -> list[dict]:
    from shared.nets.trunks import AlexNetTrunk
    from student_trainer.detector import FastRCNN, fast_rcnn_loss, sample_rois
    from xmodal_pipeline.recipes.imagenet import TORCHVISION_ALEXNET

    rows = []
    rng = np.random.default_rng(0)
    for name, (h, w) in DETECTOR_SIZES.items():
        model = FastRCNN(AlexNetTrunk(TORCHVISION_ALEXNET), num_classes=19, fc_width=4096, dropout=0.5)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        x = torch.randn(2, 3, h, w).contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)

        def boxes(n: int, h: int = h, w: int = w) -> torch.Tensor:
            xy = rng.uniform(0, [w - 40, h - 40], (n, 2))
            return torch.tensor(np.hstack([xy, xy + rng.uniform(20, 300, (n, 2))]), dtype=torch.float32)

        proposals, gts = [boxes(2000), boxes(2000)], [boxes(4), boxes(4)]
        labels = [torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])]

        def step(model=model, opt=opt, x=x, proposals=proposals, gts=gts, labels=labels) -> None:
            model.train()
            rois, lab, targets = sample_rois(proposals, gts, labels, 128, 0.25, 0.5)
            logits, deltas = model(x, rois)
            loss_cls, loss_box = fast_rcnn_loss(logits, deltas, lab, targets, 1.0)
            opt.zero_grad()
            (loss_cls + loss_box).backward()
            opt.step()

        def evaluate(model=model, x=x, proposals=proposals) -> None:
            model.eval()
            with torch.inference_mode():
                model(x[:1], proposals[:1])

        rows.append({"unit": "detector iteration", "arch": "AlexNet (torchvision) Fast R-CNN", "size": name,
                     "s_per_unit": _time(step, repeat), "gflop_per_unit": _flops(step) / 1e9})
        rows.append({"unit": "detector eval", "arch": "AlexNet (torchvision) Fast R-CNN", "size": name,
                     "s_per_unit": _time(evaluate, repeat), "gflop_per_unit": _flops(evaluate) / 1e9})
    return rows


def proposal_rows(repeat: int) -> list[dict]:
    from shared.camera import NYUD2_KINECT
    from shared.flow_image import encode_flow_image
    from shared.imageio import read_depth_m, read_rgb
    from student_trainer.proposals.methods import propose
    from student_trainer.proposals.sources import ProposalInputs
    from xmodal_data.flow import compute_flow
    from xmodal_data.hha import compute_hha
    from xmodal_data.importers.nyud2 import GUPTA_CROP

    cv2.setNumThreads(1)
    nyu = SAMPLE / "nyud2_sample"
    rgb = read_rgb(nyu / "gupta_demo_rgb.png")
    hha = compute_hha(read_depth_m(nyu / "gupta_demo_depth_mm.png"), NYUD2_KINECT.crop(**GUPTA_CROP),
                      read_depth_m(nyu / "gupta_demo_rawdepth_mm.png"))
    a, b = (cv2.resize(read_rgb(SAMPLE / "flow_pairs" / f"sintel_{i}.png"), (320, 240)) for i in (0, 1))
    frames = {"nyud2 425x560 (RGB + HHA)": ProposalInputs(rgb, (hha,)),
              "jhmdb-like 240x320 (RGB + flow)": ProposalInputs(a, (encode_flow_image(compute_flow(a, b)),))}
    rows = []
    for name, inputs in frames.items():
        for method in ("hybrid", "edge_boxes"):
            rows.append({"unit": f"proposals {method}", "arch": "-", "size": name,
                         "s_per_unit": _time(lambda inputs=inputs, method=method: propose(inputs, method, 2000),
                                              repeat)})
    cv2.setNumThreads(-1)
    return rows


UNITS: dict[str, Callable[[int, Path], list[dict]]] = {
    "teacher": lambda repeat, _: teacher_rows(repeat),
    "student": lambda repeat, _: student_rows(repeat),
    "target": lambda repeat, _: target_rows(repeat),
    "input": input_rows,
    "detector": lambda repeat, _: detector_rows(repeat),
    "proposals": lambda repeat, _: proposal_rows(repeat),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--units", nargs="+", choices=UNITS, default=list(UNITS), help="what to measure")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for unit in args.units for r in UNITS[unit](args.repeat, Path(tmp))]
    load = os.getloadavg()[0]
    print(f"{machine()}; torch threads {torch.get_num_threads()}; load average {load:.1f}\n")
    print("| unit | network | size | s per unit | GFLOP per unit |\n|---|---|---|---|---|")
    for r in rows:
        gflop = f"{r['gflop_per_unit']:.1f}" if "gflop_per_unit" in r else "–"
        print(f"| {r['unit']} | {r['arch']} | {r['size']} | {r['s_per_unit']:.4f} | {gflop} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "load_average": load,
                                         "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
