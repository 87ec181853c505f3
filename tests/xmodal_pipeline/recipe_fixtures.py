"""Small inputs of both recipes in the exact real layouts (see ../shared/DATASETS.md and the writers reused here).

* NYUD2: ``nyu_depth_v2_labeled.mat`` (v7.3: the labelled arrays at 480x640 with the real 894 class names, plus
  ``scenes``), Gupta et al.'s real ``nyusplits.mat`` / ``classMapping40.mat``, raw scene folders (PGM / PPM / dump
  at 120x160 with the toolbox calibration scaled to that size) and an MCG ``nyud2_mcg_boxes.mat`` (``bboxes`` +
  ``imnames``, MATLAB 1-based ``[y1 x1 y2 x2]``, in the coordinates of Gupta's 425x560 crop).
* UCF101 (XviD videos + ``ucfTrainTestlist``) and JHMDB (frames, puppet masks, the 3 x 21 split files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from tests.xmodal_data.fixtures_real_layouts import (
    SMALL_CALIBRATION,
    moving_square_frames,
    write_jhmdb_splits,
    write_jhmdb_video,
    write_labeled_scenes_mat,
    write_nyud2_raw_scene,
    write_ucf101_lists,
    write_ucf101_video,
)
from tests.xmodal_data.test_import_nyud2 import write_mat
from xmodal_data.importers.jhmdb import JHMDB_CLASSES
from xmodal_data.importers.nyud2 import GUPTA_CROP, read_class_mapping40

__all__ = ["JhmdbInputs", "Nyud2Inputs", "write_jhmdb_inputs", "write_nyud2_inputs"]

T0 = 1315166485.0
# the real nyusplits.mat: labelled frames 5001, 5002 test; 5003..5008 train; 5009 test; 5010 val
SCENES = ["office_0002"] * 2 + ["bedroom_0001"] * 6 + ["office_0002", "kitchen_0003"]
RAW_SCENES = ("bedroom_0001", "kitchen_0003", "office_0002")  # office_0002 is a test scene: never imported
# raw NYU label ids of three of Gupta's classes (classMapping40.mat's allClassName order)
BED, CHAIR, TABLE = 157, 5, 19


@dataclass(frozen=True)
class Nyud2Inputs:
    mat: Path
    meta: Path
    raw: Path
    calibration: Path
    mcg: Path

    def args(self) -> list[str]:
        return ["--nyud2-mat", str(self.mat), "--nyud2-meta", str(self.meta), "--nyud2-raw", str(self.raw),
                "--nyud2-calibration", str(self.calibration), "--mcg", str(self.mcg)]


def _labelled_arrays(n: int, seed: int) -> tuple[list[np.ndarray], list[list[tuple[int, int, int, int]]]]:
    """(rgb, depth, raw, labels, instances) of ``n`` 480x640 frames with 2-3 objects each, and their boxes."""
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.zeros((n, h, w, 3), np.uint8)
    depth = np.zeros((n, h, w), np.float32)
    labels = np.zeros((n, h, w), np.uint16)
    instances = np.zeros((n, h, w), np.uint8)
    boxes: list[list[tuple[int, int, int, int]]] = []
    colours = {BED: (200, 60, 40), CHAIR: (40, 180, 60), TABLE: (60, 60, 200)}
    for i in range(n):
        rgb[i] = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
        depth[i] = 2.0 + 0.002 * rows + 0.001 * cols
        frame = []
        for k, label in enumerate(rng.permutation([BED, CHAIR, TABLE])[: 2 + i % 2]):
            bw, bh = int(rng.integers(80, 160)), int(rng.integers(60, 140))
            x1, y1 = 60 + 180 * k + int(rng.integers(0, 20)), int(rng.integers(70, 460 - bh))
            rgb[i, y1:y1 + bh, x1:x1 + bw] = colours[int(label)]
            depth[i, y1:y1 + bh, x1:x1 + bw] -= 0.6
            labels[i, y1:y1 + bh, x1:x1 + bw], instances[i, y1:y1 + bh, x1:x1 + bw] = label, 1
            frame.append((x1, y1, x1 + bw, y1 + bh))
        boxes.append(frame)
    raw = depth.copy()
    raw[:, ::9, ::7] = 0
    return [rgb, depth, raw, labels, instances], boxes


def write_mcg(path: Path, names: list[str], gt: list[list[tuple[int, int, int, int]]], crop: bool,
              seed: int = 0) -> Path:
    """Gupta et al.'s one-file MCG layout: ``bboxes`` cell of (K, 4) MATLAB ``[y1 x1 y2 x2]`` (1-based,
    inclusive) + ``imnames``; boxes near the objects and at random, in crop coordinates when ``crop``."""
    rng = np.random.default_rng(seed)
    dx, dy = (GUPTA_CROP["left"], GUPTA_CROP["top"]) if crop else (0, 0)
    w, h = (GUPTA_CROP["width"], GUPTA_CROP["height"]) if crop else (640, 480)
    cells = np.empty((1, len(names)), dtype=object)
    for i, frame in enumerate(gt):
        ours = [(x1 - dx + j, y1 - dy + j, x2 - dx - j, y2 - dy - j) for x1, y1, x2, y2 in frame for j in (0, 4, 9)]
        for _ in range(40):
            x1, y1 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            ours.append((x1, y1, min(w, x1 + int(rng.integers(30, 200))), min(h, y1 + int(rng.integers(30, 200)))))
        a = np.asarray(ours, np.float64)
        cells[0, i] = np.stack([a[:, 1] + 1, a[:, 0] + 1, a[:, 3], a[:, 2]], axis=1)  # -> 1-based [y1 x1 y2 x2]
    imnames = np.empty((1, len(names)), dtype=object)
    imnames[0, :] = names
    scipy.io.savemat(path, {"bboxes": cells, "imnames": imnames})
    return path


def write_nyud2_inputs(root: Path, meta: Path, crop: bool = True) -> Nyud2Inputs:
    """The labelled .mat (10 frames, real class names, ``scenes``), raw scenes, calibration and MCG boxes."""
    root.mkdir(parents=True, exist_ok=True)
    arrays, boxes = _labelled_arrays(len(SCENES), seed=0)
    mat = write_mat(root / "nyu_depth_v2_labeled.mat", *arrays,
                    read_class_mapping40(meta / "classMapping40.mat").raw_names)
    write_labeled_scenes_mat(mat, SCENES, mode="a")
    raw = root / "raw"
    for k, scene in enumerate(RAW_SCENES):
        start = T0 + 100 * k
        write_nyud2_raw_scene(raw / scene, [start + i / 10 for i in range(20)],
                              [start + 0.013 + i / 12 for i in range(24)],
                              accel_times=[start + i / 2 for i in range(4)], seed=10 * k)
    calibration = root / "calibration.json"
    calibration.write_text(SMALL_CALIBRATION.model_dump_json())
    mcg = write_mcg(root / "nyud2_mcg_boxes.mat", [f"img_{5001 + i}" for i in range(len(SCENES))], boxes, crop)
    return Nyud2Inputs(mat, meta, raw, calibration, mcg)


@dataclass(frozen=True)
class JhmdbInputs:
    ucf101: Path
    ucf101_list: Path
    jhmdb: Path

    def args(self) -> list[str]:
        return ["--ucf101", str(self.ucf101), "--ucf101-list", str(self.ucf101_list), "--jhmdb", str(self.jhmdb)]


H, W = 120, 160
JHMDB_VIDEOS = {"brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0", "brushing_(1)!_u_cm_np1_fr_med_1",
                               "Brush_hair_2_u_nm_np1_ba_bad_2"],
                "wave": ["Wave_hello_(1)!_wave_h_cm_np1_fr_med_0", "wave_2_f_nm_np1_le_med_1",
                         "wave3_u_cm_np1_ri_bad_2"]}


def _square_masks(n: int, speed: int, seed: int) -> np.ndarray:
    """(H, W, n) puppet masks of :func:`moving_square_frames`'s square (values 1..5: body parts)."""
    side, masks = H // 3, np.zeros((H, W, n), np.uint8)
    top = (H - side) // 2
    for i in range(n):
        x = (W // 8 + speed * i) % max(1, W - side)
        masks[top:top + side, x:x + side, i] = 1 + (seed + i) % 5
    return masks


def write_jhmdb_inputs(root: Path) -> JhmdbInputs:
    """UCF101: 2 classes x 2 XviD videos (one in HandstandPushups' odd spelling) + lists; JHMDB: 2 actions x 3
    videos of 6 frames with masks, split k puts video k-1 of each action in test, the others in train."""
    ucf = root / "UCF101"
    listed = [write_ucf101_video(ucf, "ApplyEyeMakeup", 8 + g, 1, moving_square_frames(24, H, W, speed=2, seed=g))
              for g in range(2)]
    listed += [write_ucf101_video(ucf, "HandstandPushups", 8 + g, 1, moving_square_frames(24, H, W, 3, seed=5 + g),
                                  file_class="HandStandPushups") for g in range(2)]
    trainlist = write_ucf101_lists(ucf, ["ApplyEyeMakeup", "HandstandPushups"], listed)
    jhmdb = root / "JHMDB"
    for a, (action, videos) in enumerate(JHMDB_VIDEOS.items()):
        for v, video in enumerate(videos):
            seed, speed = 3 * a + v, 1 + v
            write_jhmdb_video(jhmdb, action, video, moving_square_frames(6, H, W, speed, seed=seed),
                              _square_masks(6, speed, seed))
    for k in (1, 2, 3):
        for action in JHMDB_CLASSES:
            videos = JHMDB_VIDEOS.get(action, [])
            write_jhmdb_splits(jhmdb, action, {v: 2 if i == k - 1 else 1 for i, v in enumerate(videos)}, k,
                               crlf=action == "wave")
    return JhmdbInputs(ucf, trainlist, jhmdb)
