"""Which NYU Depth V2 raw scene belongs to which split of Gupta et al.'s benchmark.

The raw dataset has no splits; its scenes take theirs from the labelled set: a raw scene folder gets the
split of the labelled frames whose ``scenes`` entry (``nyu_depth_v2_labeled.mat``) is its name, with
Gupta et al.'s ``nyusplits.mat`` giving each labelled frame's split (train 381 / val 414 / test 654).

A scene whose labelled frames fall in more than one split (Gupta's train/val are not documented to be
scene-disjoint) is reported and takes the most held-out of them, test > val > train: a test scene is never
used for training, and a val scene never trains a model validated on it.

Mapping files (``--scene-splits``): JSON ``{"bedroom_0001": "train", "kitchen_0003": ["train", "val"]}`` or
CSV lines ``scene,split`` (a header line ``scene,split`` is allowed; a scene on several lines has several
splits). :func:`write_scene_splits` writes the JSON form.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError, DataError
from xmodal_data.importers.nyud2 import FIRST_FRAME_NUMBER, SPLITS, _open_mat, read_cell_strings, read_splits

__all__ = [
    "SceneSplits",
    "check_requested_splits",
    "read_scene_splits",
    "scene_splits_from_labeled",
    "write_scene_splits",
]

_PRECEDENCE = ("test", "val", "train")


@dataclass(frozen=True)
class SceneSplits:
    """Every scene's splits as found, and the one split each scene is used in."""

    found: Mapping[str, frozenset[str]]
    source: str

    def split(self, scene: str) -> str | None:
        """The split ``scene`` is used in (test > val > train), None for an unknown scene."""
        names = self.found.get(scene)
        return None if names is None else next(s for s in _PRECEDENCE if s in names)

    def conflicts(self) -> dict[str, list[str]]:
        """Scenes in more than one split: ``{scene: sorted splits}``."""
        return {scene: sorted(names) for scene, names in sorted(self.found.items()) if len(names) > 1}


def _collect(pairs: Iterable[tuple[str, str]], where: str) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for scene, split in pairs:
        if split not in SPLITS:
            raise DataError(f"{where}: scene {scene!r} has split {split!r}; expected one of {', '.join(SPLITS)}")
        if not scene or "/" in scene or scene in (".", ".."):
            raise DataError(f"{where}: {scene!r} is not a scene folder name")
        found.setdefault(scene, set()).add(split)
    if not found:
        raise DataError(f"{where}: no scene is assigned a split")
    return {scene: frozenset(names) for scene, names in found.items()}


def scene_splits_from_labeled(mat_path: str | os.PathLike[str], splits_path: str | os.PathLike[str]) -> SceneSplits:
    """Scene splits from the labelled set's ``scenes`` and Gupta et al.'s ``nyusplits.mat``.

    Args:
        mat_path: ``nyu_depth_v2_labeled.mat`` (only its ``scenes`` cell array is read).
        splits_path: ``nyusplits.mat``.

    Raises:
        FileNotFoundError: a missing file.
        DataError: no ``scenes``, or a labelled frame that has no split (names the frame).
    """
    splits = read_splits(splits_path)
    mat_path = Path(mat_path)
    with _open_mat(mat_path) as f:
        scenes = read_cell_strings(f, mat_path, "scenes", "(1, N) object references to uint16 char arrays "
                                   "(MATLAB Nx1 cell of scene names)")
    pairs = []
    for i, scene in enumerate(scenes):
        number = FIRST_FRAME_NUMBER + i
        if number not in splits:
            raise DataError(f"labelled frame {number} ({scene}) of {mat_path} has no split in {splits_path}")
        pairs.append((scene, splits[number]))
    return SceneSplits(_collect(pairs, str(mat_path)), f"{mat_path.name} scenes + {Path(splits_path).name}")


def read_scene_splits(path: str | os.PathLike[str]) -> SceneSplits:
    """Read a scene -> split mapping file (JSON or CSV, see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        DataError: unparsable content, an unknown split or a malformed line (names the file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"scene split file {p} does not exist (expected JSON or CSV scene -> split)")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise DataError(f"{p} holds a {type(values).__name__}, expected an object {{scene: split or [splits]}}")
        pairs = []
        for scene, value in values.items():
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(f"{p}: scene {scene!r} maps to {value!r}, expected a split name or a list of them")
            pairs += [(scene, n) for n in names]
        return SceneSplits(_collect(pairs, str(p)), p.name)
    pairs = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or (lineno == 1 and cells == ["scene", "split"]):
            continue
        if len(cells) != 2:
            raise DataError(f"{p}:{lineno}: expected 'scene,split', got {','.join(row)!r}")
        pairs.append((cells[0], cells[1]))
    return SceneSplits(_collect(pairs, str(p)), p.name)


def write_scene_splits(path: str | os.PathLike[str], scene_splits: SceneSplits) -> Path:
    """Write ``{scene: [splits]}`` JSON (readable by :func:`read_scene_splits`), atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    body = {scene: sorted(names) for scene, names in sorted(scene_splits.found.items())}
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def check_requested_splits(splits: Iterable[str]) -> tuple[str, ...]:
    """The requested splits, refusing ``test`` (raw frames of test scenes would leak into training)."""
    chosen = tuple(dict.fromkeys(splits))
    if not chosen or "test" in chosen or not set(chosen) <= {"train", "val"}:
        raise ConfigError(
            f"splits {list(chosen)}: choose from train and val; test scenes are never imported (their raw "
            "frames would leak the test set into training)"
        )
    return chosen
