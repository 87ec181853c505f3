"""Import the NYU Depth V2 labeled set (Silberman, Hoiem, Kohli, Fergus, ECCV 2012) for Gupta et al.'s task.

Inputs:

* ``nyu_depth_v2_labeled.mat``: MATLAB v7.3, i.e. HDF5 (read with h5py). HDF5 stores MATLAB arrays with
  their dimensions reversed, so the MATLAB ``HxWx3xN`` image stack reads as ``(N, 3, W, H)``:

  ============  ====================  ==============================================================
  key           h5py shape, dtype     content
  ============  ====================  ==============================================================
  images        (N, 3, W, H) uint8    RGB
  depths        (N, W, H) float32     filled depth, metres
  rawDepths     (N, W, H) float32     raw Kinect depth, metres, 0 = missing
  labels        (N, W, H) uint16      raw NYU class id 1..894, 0 = unlabeled
  instances     (N, W, H) uint8       instance id within its class (an object = a (label, instance) pair)
  names         (1, C) object refs    cell array of C = 894 class names; each reference points to a
                                      ``(L, 1)`` uint16 char dataset under ``#refs#`` (UTF-16 code units)
  ============  ====================  ==============================================================

  A frame ``i`` is therefore ``images[i].transpose(2, 1, 0)`` (H, W, 3) and ``depths[i].T`` (H, W).
  Checked against public readers: camila-i-vasquez/not-corners-anymore ``data_exploration.py`` (names
  dereferenced and decoded with ``chr``), lidongyv/Monocular-depth-esitimation-with-region-support-cvpr
  ``nyu1_data.py`` (``images[i]`` transposed ``[2, 1, 0]``, ``depths[i]`` transposed), a NYUv2 reader
  decoding ``sceneTypes`` (``(1, n)`` reference dataset, ``(n_chars, 1)`` ``<u2`` strings), and the NYU
  toolbox's ``get_instance_masks.m`` (an instance = a unique nonzero ``(label, instance)`` pair).
* ``nyusplits.mat`` (Gupta et al., s-gupta/rgbd): ``train`` 381, ``val`` 414, ``test`` 654 labeled-frame
  numbers 5001..6449; labeled frame ``i`` (1-based) is ``img_{5000 + i}``.
* ``classMapping40.mat``: ``allClassName`` (the 894 raw names, in label-id order) and ``mapClass``.

Class mapping (:func:`detection_class_map`): a raw label belongs to one of the 19 detection classes when
its NYU name *is* that class name (case, ``-``/``_`` and repeated spaces ignored); every other label gives
no box. This is Gupta et al.'s benchmark: their task file sets each class to the single raw name
(``task.clss{i} = {catName{i}}``) and their ``getGroundTruthBoxes.m`` names boxes by raw class (s-gupta/
rcnn-depth). It also equals the 40-class mapping where that one has the class: in ``classMapping40.mat``
each of the 17 shared classes (bed, table, ...) holds exactly its own raw name, while ``garbage bin``
(40-class ``otherfurniture``) and ``monitor`` (``otherprop``) exist only as raw names. The importer
checks that the file's ``names`` give the same map as ``classMapping40.mat``'s ``allClassName``.

Boxes: the tight box of each object's mask, ``[x1, y1, x2, y2]`` in pixel-edge coordinates with x2/y2
exclusive (MATLAB's 1-based inclusive ``[xmin ymin xmax ymax]`` is ``[xmin-1, ymin-1, xmax, ymax]``).
With ``crop`` the masks are cropped first (Gupta's 425x560 crop, rows 46..470 and cols 41..600 1-based),
so a box is the tight box of the object's visible part; objects entirely outside the crop are dropped.

Outputs under ``out_dir``: ``rgb/img_5001.png``, ``depth/img_5001.png`` and ``raw_depth/img_5001.png``
(uint16 millimetres, 0 = missing), ``manifest.jsonl`` (frame ids ``nyud2.img_5001``, splits ``train``,
``val``, ``test``, the camera in every record) and ``import.json`` (the stamp: source file name and size,
crop, camera; a rerun with others refuses to resume into the folder).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from tqdm import tqdm

from shared.camera import NYUD2_KINECT, Intrinsics
from shared.errors import ConfigError, DataError
from shared.imageio import write_depth_mm, write_image
from shared.manifest import FrameRecord, ManifestHeader, ObjectBox, write_manifest
from xmodal_data.importers.stamp import check_stamp

__all__ = [
    "DATASET",
    "FIRST_FRAME_NUMBER",
    "GUPTA_CLASSES",
    "GUPTA_CROP",
    "MANIFEST_NAME",
    "SPLITS",
    "ClassMapping40",
    "crop_gupta",
    "detection_class_map",
    "frame_id",
    "import_nyud2",
    "instance_boxes",
    "read_cell_strings",
    "read_class_mapping40",
    "read_label_names",
    "read_splits",
]

log = logging.getLogger(__name__)

DATASET = "nyud2"
MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "val", "test")
FIRST_FRAME_NUMBER = 5001
"""Labeled frame 1 (1-based) of the .mat file is ``img_5001``."""

GUPTA_CLASSES: tuple[str, ...] = (
    "bathtub", "bed", "bookshelf", "box", "chair", "counter", "desk", "door", "dresser", "garbage bin",
    "lamp", "monitor", "night stand", "pillow", "sink", "sofa", "table", "television", "toilet",
)
"""Gupta et al.'s 19 NYUD2 detection classes (ECCV 2014, CVPR 2016), in their (sorted) order."""

GUPTA_CROP: Mapping[str, int] = {"top": 45, "left": 40, "height": 425, "width": 560}
"""Gupta et al.'s crop of the 480x640 frames, 0-based: rows 45..469, cols 40..599 (46..470, 41..600 1-based)."""

_SPLITS_FILE = "nyusplits.mat"
_MAPPING_FILE = "classMapping40.mat"
_MAX_DEPTH_M = 65.535  # largest depth a uint16 millimetre PNG holds


def frame_id(number: int) -> str:
    """Frame id of labeled-frame number ``number`` (5001..6449): ``nyud2.img_5001``."""
    return f"{DATASET}.img_{number}"


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name).strip().lower()


def detection_class_map(raw_names: Sequence[str]) -> dict[int, str]:
    """Map raw NYU label ids to Gupta et al.'s detection classes by exact class name.

    Args:
        raw_names: the NYU class names in label-id order (``raw_names[0]`` is label 1).

    Returns:
        ``{label_id (1-based): class}`` for the labels whose normalised name (lower case, ``-``/``_`` and
        repeated whitespace as one space) is one of :data:`GUPTA_CLASSES`; all other labels are absent.
    """
    wanted = {_normalise(c): c for c in GUPTA_CLASSES}
    return {i: wanted[n] for i, name in enumerate(raw_names, start=1) if (n := _normalise(name)) in wanted}


def instance_boxes(labels: np.ndarray, instances: np.ndarray, class_map: Mapping[int, str]) -> list[ObjectBox]:
    """Tight boxes of the objects of the mapped classes in one frame.

    An object is a nonzero ``(label, instance)`` pair, as in the NYU toolbox's ``get_instance_masks.m``;
    pairs whose label is not in ``class_map`` are ignored.

    Args:
        labels: (H, W) raw NYU label ids (0 = unlabeled).
        instances: (H, W) instance ids within each label.
        class_map: ``{label_id: class}`` (see :func:`detection_class_map`).

    Returns:
        One :class:`ObjectBox` per object, ``[x1, y1, x2, y2]`` pixel-edge coordinates (x2/y2 exclusive),
        sorted by (label, instance).

    Raises:
        ValueError: the two maps differ in shape or are not 2-D.
    """
    if labels.ndim != 2 or labels.shape != instances.shape:
        raise ValueError(f"labels {labels.shape} and instances {instances.shape} must be (H, W) maps of one size")
    keep = np.isin(labels, np.fromiter(class_map, dtype=np.int64, count=len(class_map)))
    ys, xs = np.nonzero(keep)
    if ys.size == 0:
        return []
    keys = (labels[ys, xs].astype(np.int64) << 32) | instances[ys, xs].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, ys, xs = keys[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    x1, x2 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts) + 1
    y1, y2 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts) + 1
    return [
        ObjectBox(label=class_map[int(keys[s] >> 32)], box=(float(a), float(b), float(c), float(d)))
        for s, a, b, c, d in zip(starts, x1, y1, x2, y2, strict=True)
    ]


def crop_gupta(image: np.ndarray) -> np.ndarray:
    """Gupta et al.'s crop (:data:`GUPTA_CROP`) of a (480, 640, ...) array: a (425, 560, ...) view."""
    top, left, height, width = (GUPTA_CROP[k] for k in ("top", "left", "height", "width"))
    if image.shape[:2] != (480, 640):
        raise ValueError(f"Gupta's crop applies to 480x640 frames, got {image.shape[0]}x{image.shape[1]}")
    return image[top : top + height, left : left + width]


# ----------------------------------------------------------------------------------------------- metadata


def read_splits(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read Gupta et al.'s ``nyusplits.mat``.

    Returns:
        ``{labeled-frame number (5001..): split}`` for the splits ``train``, ``val`` and ``test``.

    Raises:
        FileNotFoundError: no such file.
        DataError: unreadable file, a missing split, or a frame number in two splits (names which).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"splits file {p} does not exist (expected Gupta et al.'s {_SPLITS_FILE})")
    try:
        mat = scipy.io.loadmat(p)
    except (ValueError, TypeError, OSError) as e:
        raise DataError(f"{p} is not a readable MATLAB v5 .mat file: {e}") from None
    splits: dict[int, str] = {}
    for name in SPLITS:
        if name not in mat:
            raise DataError(f"{p} has no variable {name!r}; expected {', '.join(SPLITS)} (frame numbers 5001..6449)")
        for number in np.asarray(mat[name]).ravel().astype(np.int64).tolist():
            if number in splits:
                raise DataError(f"{p}: frame {number} is in both {splits[number]!r} and {name!r}")
            splits[number] = name
    if not splits:
        raise DataError(f"{p}: the splits {', '.join(SPLITS)} are all empty")
    return splits


@dataclass(frozen=True)
class ClassMapping40:
    """``classMapping40.mat``: the raw NYU names and their 40-class mapping (Gupta et al., CVPR 2013)."""

    raw_names: tuple[str, ...]
    """The 894 raw class names, label-id order (``raw_names[0]`` is label 1)."""
    class_names: tuple[str, ...]
    """The 40 class names (``class_names[0]`` is class 1)."""
    map_class: tuple[int, ...]
    """40-class id (1..40) of each raw label, label-id order."""


def _cellstr(value: np.ndarray) -> tuple[str, ...]:
    return tuple(str(np.asarray(x).ravel()[0]) if np.asarray(x).size else "" for x in np.asarray(value).ravel())


def read_class_mapping40(path: str | os.PathLike[str]) -> ClassMapping40:
    """Read ``classMapping40.mat`` (MATLAB v5: ``allClassName``, ``className``, ``mapClass``).

    Raises:
        FileNotFoundError: no such file.
        DataError: unreadable, a variable missing, or inconsistent lengths/ids (names which).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"class mapping {p} does not exist (expected Gupta et al.'s {_MAPPING_FILE})")
    try:
        mat = scipy.io.loadmat(p)
    except (ValueError, TypeError, OSError) as e:
        raise DataError(f"{p} is not a readable MATLAB v5 .mat file: {e}") from None
    for key in ("allClassName", "className", "mapClass"):
        if key not in mat:
            raise DataError(f"{p} has no variable {key!r}; expected allClassName, className and mapClass")
    mapping = ClassMapping40(
        raw_names=_cellstr(mat["allClassName"]),
        class_names=_cellstr(mat["className"]),
        map_class=tuple(np.asarray(mat["mapClass"]).ravel().astype(np.int64).tolist()),
    )
    if len(mapping.map_class) != len(mapping.raw_names):
        raise DataError(f"{p}: mapClass has {len(mapping.map_class)} entries but allClassName {len(mapping.raw_names)}")
    if mapping.map_class and not 1 <= min(mapping.map_class) <= max(mapping.map_class) <= len(mapping.class_names):
        raise DataError(f"{p}: mapClass holds ids outside 1..{len(mapping.class_names)} (className)")
    return mapping


# ------------------------------------------------------------------------------------------------- HDF5


def _open_mat(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"NYUD2 file {path} does not exist (expected nyu_depth_v2_labeled.mat)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(
            f"{path} is not an HDF5 file ({e}); expected the MATLAB v7.3 nyu_depth_v2_labeled.mat "
            "(an older -v7 .mat or a truncated download does not open)"
        ) from None


def _layout(camera: Intrinsics) -> dict[str, tuple[tuple[int, ...], str, str]]:
    w, h = camera.width, camera.height
    return {
        "images": ((3, w, h), "uint8", "RGB, MATLAB HxWx3xN"),
        "depths": ((w, h), "float", "filled depth in metres, MATLAB HxWxN"),
        "rawDepths": ((w, h), "float", "raw depth in metres, 0 = missing, MATLAB HxWxN"),
        "labels": ((w, h), "integer", "raw class ids 1..894, MATLAB HxWxN"),
        "instances": ((w, h), "integer", "instance ids per class, MATLAB HxWxN"),
    }


def _dtype_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "uint8":
        return dtype == np.uint8
    return np.issubdtype(dtype, np.floating if kind == "float" else np.integer)


def _check_layout(f: h5py.File, path: Path, camera: Intrinsics) -> int:
    """Check the datasets' presence, shapes and dtypes; return the frame count N."""
    counts: dict[str, int] = {}
    for key, (dims, kind, what) in _layout(camera).items():
        expected = f"{kind} array of shape (N, {', '.join(map(str, dims))}) ({what})"
        ds = f.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise DataError(f"{path}: HDF5 dataset {key!r} is missing; expected a {expected}")
        if ds.ndim != len(dims) + 1 or ds.shape[1:] != dims:
            hint = ""
            if ds.ndim == len(dims) + 1 and ds.shape[1:] == (*dims[:-2], dims[-1], dims[-2]):
                hint = " (width and height are swapped: was the file re-saved transposed?)"
            raise DataError(f"{path}: dataset {key!r} has shape {ds.shape}, expected a {expected}{hint}")
        if not _dtype_ok(ds.dtype, kind):
            raise DataError(f"{path}: dataset {key!r} has dtype {ds.dtype}, expected a {expected}")
        counts[key] = ds.shape[0]
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: the datasets hold different frame counts {counts}")
    return counts["images"]


def read_cell_strings(f: h5py.File, path: Path, key: str, expected: str) -> tuple[str, ...]:
    """Decode a MATLAB cell array of strings: object references to uint16 char datasets, in cell order.

    Args:
        f, path: the open v7.3 file and its path (for messages).
        key: the dataset, e.g. ``names`` or ``scenes``.
        expected: what the dataset should be, for the error message.

    Raises:
        DataError: ``key`` missing, not references, or a reference to something other than a char array.
    """
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset) or h5py.check_dtype(ref=ds.dtype) is not h5py.Reference:
        raise DataError(f"{path}: HDF5 dataset {key!r} is missing or not a cell array; expected {expected}")
    strings = []
    for k, ref in enumerate(np.asarray(ds[()]).ravel(), start=1):
        target = f[ref] if ref else None
        if not isinstance(target, h5py.Dataset):
            raise DataError(f"{path}: {key}{{{k}}} does not reference a char dataset")
        chars = np.asarray(target[()]).ravel()
        if target.attrs.get("MATLAB_empty", 0):
            chars = chars[:0]
        if not np.issubdtype(chars.dtype, np.integer):
            raise DataError(f"{path}: {key}{{{k}}} has dtype {chars.dtype}, expected uint16 characters")
        strings.append("".join(map(chr, chars.tolist())))
    return tuple(strings)


def read_label_names(f: h5py.File, path: Path) -> tuple[str, ...]:
    """Decode the ``names`` cell array: object references to uint16 char datasets (1-based label order).

    Raises:
        DataError: ``names`` missing, not references, or a reference to something other than a char array.
    """
    return read_cell_strings(
        f, path, "names", "(1, 894) object references to uint16 char arrays (MATLAB 894x1 cell of class names)"
    )


# ------------------------------------------------------------------------------------------------ import


def _frames_to_import(n_file: int, splits: Mapping[int, str], limit: int | None, path: Path, splits_path: Path) -> int:
    """How many leading frames to import; checks that each has a split (see :func:`import_nyud2`)."""
    numbers = set(range(FIRST_FRAME_NUMBER, FIRST_FRAME_NUMBER + n_file))
    if limit is None:
        if numbers != set(splits):
            raise DataError(
                f"frame count mismatch: {path} holds {n_file} labeled frames ({FIRST_FRAME_NUMBER}.."
                f"{FIRST_FRAME_NUMBER + n_file - 1}) but {splits_path} assigns {len(splits)} frame numbers "
                f"({min(splits)}..{max(splits)}); pass limit to import only the first frames of a partial file"
            )
        return n_file
    n = min(limit, n_file)
    unassigned = sorted(set(range(FIRST_FRAME_NUMBER, FIRST_FRAME_NUMBER + n)) - set(splits))
    if unassigned:
        raise DataError(f"frames {unassigned[:10]} of {path} are in no split of {splits_path}")
    absent = sum(1 for number in splits if number >= FIRST_FRAME_NUMBER + n)
    if absent:
        log.warning(
            "importing frames %d..%d of %s (limit=%d, the file holds %d); %d frames of the splits are skipped",
            FIRST_FRAME_NUMBER, FIRST_FRAME_NUMBER + n - 1, path, limit, n_file, absent,
        )
    return n


def _check_metres(depth: np.ndarray, key: str, path: Path, index: int) -> np.ndarray:
    finite = depth[np.isfinite(depth)]
    if finite.size and (finite.min() < 0 or finite.max() > _MAX_DEPTH_M):
        raise DataError(
            f"{path}: {key}[{index}] (frame {frame_id(FIRST_FRAME_NUMBER + index)}) spans "
            f"{finite.min():.3f}..{finite.max():.3f}, expected metres in 0..{_MAX_DEPTH_M}"
        )
    return depth


def import_nyud2(
    mat_path: str | os.PathLike[str],
    meta_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    crop: bool = False,
    limit: int | None = None,
    progress: bool = True,
    camera: Intrinsics = NYUD2_KINECT,
) -> Path:
    """Import the NYUD2 labeled set as PNGs plus a manifest with Gupta et al.'s splits and 19 classes.

    Resumable: image files already present are kept (and their HDF5 frames not read); the manifest is
    written at the end, atomically.

    Args:
        mat_path: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 / HDF5; layout in the module docstring).
        meta_dir: folder with ``nyusplits.mat`` and ``classMapping40.mat``.
        out_dir: output folder (see the module docstring).
        crop: apply Gupta et al.'s 425x560 crop (:data:`GUPTA_CROP`) to images, depths, boxes and camera.
        limit: import only the first ``limit`` frames. Without it the file must hold exactly the frames the
            splits name (all 1449); with it, split frames beyond the file or the limit are logged and skipped.
        progress: show a progress bar.
        camera: intrinsics of the file's frames; its size is the expected frame size (480x640 for the real
            file; a smaller, e.g. resized, copy needs its own camera and cannot be cropped).

    Returns:
        The manifest path, ``out_dir/manifest.jsonl``.

    Raises:
        FileNotFoundError: a missing input file (named).
        DataError: a wrong HDF5 layout (names the dataset and expected shape), class names that disagree
            with ``classMapping40.mat``, a frame count that does not match the splits, implausible depth.
        ConfigError: ``limit`` < 1, crop on frames that are not 480x640, or ``out_dir`` made with other settings.
    """
    mat_path, meta_dir, out_dir = Path(mat_path), Path(meta_dir), Path(out_dir)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if crop and (camera.height, camera.width) != (480, 640):
        raise ConfigError(f"crop=True (Gupta's crop) needs 480x640 frames, got a {camera.height}x{camera.width} camera")
    frame_camera = camera.crop(**GUPTA_CROP) if crop else camera
    splits_path, mapping_path = meta_dir / _SPLITS_FILE, meta_dir / _MAPPING_FILE
    splits = read_splits(splits_path)
    mapping40 = read_class_mapping40(mapping_path)
    with _open_mat(mat_path) as f:
        n_file = _check_layout(f, mat_path, camera)
        names = read_label_names(f, mat_path)
        class_map, meta_map = detection_class_map(names), detection_class_map(mapping40.raw_names)
        if class_map != meta_map:
            raise DataError(
                f"{mat_path}: its 'names' give the (label id, class) pairs "
                f"{sorted(class_map.items() - meta_map.items())} where {mapping_path} gives "
                f"{sorted(meta_map.items() - class_map.items())}: another NYU label version?"
            )
        n = _frames_to_import(n_file, splits, limit, mat_path, splits_path)
        source = {"name": mat_path.name, "bytes": mat_path.stat().st_size}
        check_stamp(out_dir, DATASET, {"source": source, "crop": crop, "camera": camera.model_dump()})
        records = [
            _import_frame(
                f, mat_path, i, splits[FIRST_FRAME_NUMBER + i], class_map, len(names), crop, frame_camera, out_dir
            )
            for i in tqdm(range(n), desc=DATASET, unit="frame", disable=not progress)
        ]
    header = ManifestHeader(
        dataset=DATASET,
        classes=list(GUPTA_CLASSES),
        description=(
            "NYU Depth V2 labeled set (Silberman et al., ECCV 2012) with Gupta et al.'s splits and 19 "
            f"detection classes; {'cropped to 425x560 (Gupta et al.)' if crop else 'full frames'}"
        ),
    )
    return write_manifest(out_dir / MANIFEST_NAME, header, records)


def _read_image(f: h5py.File, path: Path, kind: str, index: int) -> np.ndarray:
    """One frame's RGB (H, W, 3) uint8, or depth / raw depth (H, W) metres, from the HDF5 stacks."""
    if kind == "rgb":
        return f["images"][index].transpose(2, 1, 0)
    key = "depths" if kind == "depth" else "rawDepths"
    return _check_metres(f[key][index].T, key, path, index)


def _import_frame(
    f: h5py.File,
    path: Path,
    index: int,
    split: str,
    class_map: Mapping[int, str],
    n_names: int,
    crop: bool,
    camera: Intrinsics,
    out_dir: Path,
) -> FrameRecord:
    """Write one frame's images (those not present yet) and return its record."""
    number = FIRST_FRAME_NUMBER + index
    labels, instances = f["labels"][index].T, f["instances"][index].T
    if labels.max(initial=0) > n_names:
        raise DataError(f"{path}: labels[{index}] holds class id {labels.max()} beyond the {n_names} names")
    if crop:
        labels, instances = crop_gupta(labels), crop_gupta(instances)
    rel = {kind: f"{kind}/img_{number}.png" for kind in ("rgb", "depth", "raw_depth")}
    for kind, r in rel.items():
        if not (out_dir / r).is_file():
            image = _read_image(f, path, kind, index)
            image = np.ascontiguousarray(crop_gupta(image) if crop else image)
            (write_image if kind == "rgb" else write_depth_mm)(out_dir / r, image)
    return FrameRecord(
        id=frame_id(number),
        split=split,
        rgb=rel["rgb"],
        depth=rel["depth"],
        raw_depth=rel["raw_depth"],
        intrinsics=camera,
        objects=instance_boxes(labels, instances, class_map),
    )
