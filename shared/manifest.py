"""Manifests: the JSON-lines list of frames every component reads.

Format (one JSON object per line, UTF-8):

* line 1, the header: ``{"format": "xmodal-manifest", "version": 1, "dataset": "synth", "classes": [...]}``
* every other line, one :class:`FrameRecord`.

Paths inside a manifest are relative to the manifest's own directory (absolute paths are allowed).
Boxes are ``[x1, y1, x2, y2]`` in pixels of the RGB image, pixel-edge coordinates (0 = left edge of
column 0), x2/y2 exclusive, the torchvision convention. Depth PNGs are uint16 millimetres, 0 = missing.

Optional ground truth of a clip (datasets that know it, e.g. the built-in synthetic one): ``flow_gt`` is the
exact forward flow t -> t+1 at every pixel of frame t (the convention of :mod:`shared.flow_image`), a KITTI
16-bit flow PNG (``.png``: u, v at 1/64 px + a valid channel) or a Middlebury ``.flo`` (float32), told apart
by the extension; ``flow_occlusion`` a uint8 single-channel PNG of the same size, 0 where
the pixel's point is visible at t+1 and non-zero where it is not (1 hidden behind a surface, 2 out of the
frame, 3 no surface at t). Trainers ignore both; they exist to measure flow estimates against.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.atomic import atomic_open
from shared.camera import Intrinsics
from shared.errors import FrameNotFoundError, ManifestError
from shared.ids import validate_frame_id

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "FrameRecord",
    "Manifest",
    "ManifestHeader",
    "ObjectBox",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FORMAT = "xmodal-manifest"
MANIFEST_VERSION = 1

FrameId = Annotated[str, AfterValidator(validate_frame_id)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]


class ObjectBox(BaseModel):
    """One labelled object: class name and box (pixels, x1 y1 x2 y2, x2/y2 exclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(min_length=1)
    box: tuple[float, float, float, float]
    difficult: bool = False

    @field_validator("box")
    @classmethod
    def _positive_area(cls, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"box {list(box)} must have x2 > x1 and y2 > y1")
        return box


class FrameRecord(BaseModel):
    """One frame: id, split, and the paths of its modalities.

    ``objects`` is ``None`` for unlabelled frames and a (possibly empty) list for labelled ones.
    ``rgb_next`` is frame t+1 of a clip (flow pairs); ``flow`` the encoded flow image of (t, t+1); ``flow_mirror``
    the flow image of the mirrored pair (flip(t), flip(t+1)): flow methods are not mirror-equivariant, so this, not a
    flipped ``flow``, is the exact student input of a mirrored training sample; ``flow_gt`` / ``flow_occlusion`` its
    optional ground-truth flow and visibility (module docstring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: FrameId
    split: Name
    rgb: str = Field(min_length=1)
    depth: str | None = None
    raw_depth: str | None = None
    hha: str | None = None
    rgb_next: str | None = None
    flow: str | None = None
    flow_mirror: str | None = None
    flow_gt: str | None = None
    flow_occlusion: str | None = None
    intrinsics: Intrinsics | None = None
    objects: list[ObjectBox] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FrameRecord:
        if self.raw_depth is not None and self.depth is None:
            raise ValueError("raw_depth is given without depth")
        if self.flow_occlusion is not None and self.flow_gt is None:
            raise ValueError("flow_occlusion is given without flow_gt")
        if self.depth is not None and self.intrinsics is None:
            raise ValueError("a frame with depth needs intrinsics (HHA back-projects through the camera)")
        return self

    @property
    def labeled(self) -> bool:
        return self.objects is not None


class ManifestHeader(BaseModel):
    """First line of a manifest: format tag, version, dataset name and the ordered class list."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["xmodal-manifest"] = MANIFEST_FORMAT
    version: Literal[1] = MANIFEST_VERSION
    dataset: Name
    classes: list[str] = Field(default_factory=list)
    description: str = ""


class Manifest:
    """A validated header plus frames, with paths resolved against the manifest's directory."""

    def __init__(
        self, header: ManifestHeader, frames: Iterable[FrameRecord], root: Path, source: str | None = None
    ) -> None:
        self.header = header
        self.frames = list(frames)
        self.root = Path(root)
        self.source = source or str(self.root)
        self._index = {f.id: i for i, f in enumerate(self.frames)}
        if len(self._index) != len(self.frames):
            seen: set[str] = set()
            dup = next(f.id for f in self.frames if f.id in seen or seen.add(f.id))  # type: ignore[func-returns-value]
            raise ManifestError(self.source, None, f"duplicate frame id {dup!r}")
        known = set(header.classes)
        for f in self.frames:
            for obj in f.objects or ():
                if known and obj.label not in known:
                    raise ManifestError(
                        self.source, None, f"frame {f.id!r} has label {obj.label!r} not in classes {sorted(known)}"
                    )

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[FrameRecord]:
        return iter(self.frames)

    def __getitem__(self, frame_id: str) -> FrameRecord:
        try:
            return self.frames[self._index[validate_frame_id(frame_id)]]
        except KeyError:
            raise FrameNotFoundError(f"frame {frame_id!r} is not in the manifest under {self.root}") from None

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._index

    @property
    def classes(self) -> list[str]:
        return list(self.header.classes)

    def split(self, *names: str) -> list[FrameRecord]:
        """Frames whose split is one of ``names`` (in manifest order)."""
        return [f for f in self.frames if f.split in names]

    def splits(self) -> dict[str, int]:
        """Frame count per split."""
        counts: dict[str, int] = {}
        for f in self.frames:
            counts[f.split] = counts.get(f.split, 0) + 1
        return counts

    def path(self, relative: str) -> Path:
        """Absolute path of a path stored in this manifest."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p


def _parse_line(path: str, lineno: int, text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ManifestError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _decode_line(path: str, lineno: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(path, lineno, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                            "line); manifests are UTF-8 JSON lines") from None


def _validation_error(path: str, lineno: int, err: ValidationError) -> ManifestError:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or None
    return ManifestError(path, lineno, first["msg"], field=field)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest.

    Raises:
        ManifestError: naming the file, 1-based line and field of the first problem (also: a line that is not
            UTF-8, a directory given instead of a file).
        FileNotFoundError: when the file does not exist.
    """
    p = Path(path)
    name = str(p)
    if p.is_dir():
        inside = p / "manifest.jsonl"
        hint = f" (did you mean {inside}?)" if inside.is_file() else ""
        raise ManifestError(name, None, f"is a directory, not a manifest file{hint}")
    if not p.is_file():
        raise FileNotFoundError(f"manifest {name} does not exist")
    header: ManifestHeader | None = None
    frames: list[FrameRecord] = []
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = _decode_line(name, lineno, raw)
            if not text.strip():
                continue
            obj = _parse_line(name, lineno, text)
            try:
                if header is None:
                    if obj.get("format") != MANIFEST_FORMAT:
                        got = obj.get("format")
                        msg = f"expected a header with format {MANIFEST_FORMAT!r}, got {got!r}"
                        raise ManifestError(name, lineno, msg, field="format")
                    header = ManifestHeader.model_validate(obj)
                else:
                    frames.append(FrameRecord.model_validate(obj))
            except ValidationError as e:
                raise _validation_error(name, lineno, e) from None
    if header is None:
        raise ManifestError(name, None, "empty manifest: expected a header line")
    return Manifest(header, frames, p.resolve().parent, source=name)


def write_manifest(
    path: str | os.PathLike[str], header: ManifestHeader, frames: Iterable[FrameRecord]
) -> Path:
    """Write a manifest atomically (:func:`shared.atomic.atomic_open`), so a reader never sees half a file."""
    p = Path(path)
    with atomic_open(p, "w") as fh:
        fh.write(header.model_dump_json() + "\n")
        for f in frames:
            fh.write(f.model_dump_json(exclude_none=True) + "\n")
    return p
