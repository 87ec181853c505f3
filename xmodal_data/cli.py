"""``xmodal-data``: make and prepare datasets (synthetic set, encoders, importers, checks)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import XModalError
from shared.settings import Command, run_commands

__all__ = ["main"]

_ENV = "XMODAL_DATA_"


class SynthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "SYNTH_", extra="ignore")

    out: Path = Field(Path("runs/data/synth"), description="output folder (manifest.jsonl, rgb/, depth/, ...)")
    profile: Literal["tiny", "quick", "paper", "full", "pretrain-tiny", "pretrain-quick", "pretrain-full"] = Field(
        "quick", description="size profile (paper: quick with 100 labelled depth and flow frames; pretrain-*: the "
        "ImageNet-like teacher's separate labelled RGB renders)")
    seed: int = Field(0, description="dataset seed; the same seed gives byte-identical files")
    workers: int | None = Field(None, ge=1, description="processes (default: all cores)")
    encode: bool = Field(True, description="also encode HHA and flow images after rendering")
    flow_method: Literal["dis", "dis-fine", "farneback"] = Field(
        "dis", description="optical flow algorithm of the flow images (dis-fine: DIS down to full resolution, for "
        "small frames; BENCHMARKS.md, 'Flow diagnosis')")
    progress: bool = Field(True, description="show progress bars")


class EncodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "ENCODE_", extra="ignore")

    manifest: Path = Field(description="manifest to encode; rewritten in place with hha/flow paths")
    modalities: list[Literal["hha", "flow"]] = Field(["hha", "flow"], description="what to encode")
    flow_method: Literal["dis", "dis-fine", "farneback"] = Field(
        "dis", description="optical flow algorithm (dis-fine: DIS down to full resolution, for small frames)")
    workers: int | None = Field(None, ge=1, description="processes (default: all cores)")
    progress: bool = Field(True, description="show a progress bar")


class ContactSheetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "SHEET_", extra="ignore")

    manifest: Path = Field(description="manifest to draw frames from")
    out: Path = Field(Path("contact_sheet.png"), description="PNG to write")
    rows: int = Field(6, ge=1, le=64, description="number of frames shown")


class ValidateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "VALIDATE_", extra="ignore")

    manifest: Path = Field(description="manifest to check")
    files: bool = Field(True, description="also check that every referenced file exists")


class Nyud2Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "NYUD2_", extra="ignore")

    mat: Path = Field(description="nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5)")
    meta: Path = Field(description="folder with nyusplits.mat and classMapping40.mat")
    out: Path = Field(Path("runs/data/nyud2"), description="output folder")
    crop: bool = Field(False, description="apply Gupta et al.'s 425x560 crop")
    limit: int | None = Field(None, ge=1, description="import only the first N frames")
    progress: bool = Field(True, description="show a progress bar")


class VideoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "VIDEO_", extra="ignore")

    source: Path = Field(description="a video file (anything OpenCV reads) or a folder of frames")
    out: Path = Field(Path("runs/data/video"), description="output folder")
    dataset: str = Field("video", description="dataset prefix of the frame ids")
    stride: int = Field(10, ge=1, description="take a pair every N frames")
    step: int = Field(1, ge=1, description="frame t+step is the pair's second frame")
    max_side: int | None = Field(None, ge=16, description="resize so the longer side is at most this")
    split: str = Field("flow_transfer", description="split name written to the manifest")
    progress: bool = Field(True, description="show a progress bar")


class Nyud2RawSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "NYUD2_RAW_", extra="ignore")

    root: Path = Field(description="folder of the raw scene folders (bedroom_0001/ ... or <zip name>/<scene>/)")
    out: Path = Field(Path("runs/data/nyud2_raw"), description="output folder")
    splits: list[Literal["train", "val"]] = Field(["train", "val"], description="scene splits to import "
                                                  "(test scenes never are)")
    every_s: float = Field(1.0, gt=0, description="sample one depth frame per this many seconds per scene")
    scene_splits: Path | None = Field(None, description="scene -> split file (JSON {scene: split} or CSV "
                                      "scene,split); or give --labeled-mat and --meta")
    labeled_mat: Path | None = Field(None, description="nyu_depth_v2_labeled.mat, whose 'scenes' with "
                                     "nyusplits.mat give the scene splits")
    meta: Path | None = Field(None, description="folder with Gupta et al.'s nyusplits.mat (with --labeled-mat)")
    calibration: Path | None = Field(None, description="JSON of camera_params.m fields overriding the toolbox "
                                     "constants (needed for frames other than 640x480)")
    fill_alpha: float = Field(1.0, gt=0, description="colorization fill's data-term weight (toolbox: 1)")
    fill_solver: Literal["iterative", "direct"] = Field("iterative", description="colorization fill solver "
                                                        "(the same solution; iterative takes ~4x less CPU)")
    max_sync_gap_s: float | None = Field(None, gt=0, description="drop depth frames whose nearest RGB frame is "
                                         "farther in time (default: keep all, as the toolbox)")
    allow_missing_scenes: bool = Field(False, description="skip requested scenes missing under --root instead "
                                       "of failing")
    workers: int | None = Field(None, ge=1, description="processes (default: all cores)")
    progress: bool = Field(True, description="show a progress bar")


class Ucf101Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "UCF101_", extra="ignore")

    root: Path = Field(description="folder holding UCF-101/ (or its class folders)")
    list: Path = Field(description="split list, e.g. ucfTrainTestlist/trainlist01.txt")
    out: Path = Field(Path("runs/data/ucf101"), description="output folder")
    frames_per_video: int = Field(5, ge=1, description="evenly spaced (t, t+1) pairs per video")
    split: str = Field("flow_transfer", description="split name written to the manifest")
    flow_method: Literal["dis", "farneback"] = Field("dis", description="optical flow algorithm")
    skip_bad: bool = Field(False, description="skip (and list) videos that cannot be decoded instead of failing")
    workers: int | None = Field(None, ge=1, description="processes (default: all cores)")
    progress: bool = Field(True, description="show a progress bar")


class JhmdbSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_ENV + "JHMDB_", extra="ignore")

    root: Path = Field(description="JHMDB folder with Rename_Images/, puppet_mask/ and splits/")
    split: int = Field(ge=1, le=3, description="JHMDB split 1, 2 or 3 (manifest_split<k>.jsonl; train/test -> "
                                    "flow_train/flow_test)")
    out: Path = Field(Path("runs/data/jhmdb"), description="output folder (one folder can take all 3 splits)")
    flow_method: Literal["dis", "farneback"] = Field("dis", description="optical flow algorithm")
    workers: int | None = Field(None, ge=1, description="processes (default: all cores)")
    progress: bool = Field(True, description="show a progress bar")


def _synth(s: SynthSettings) -> None:
    from xmodal_data.encode import encode_manifest
    from xmodal_data.synth.config import SynthConfig
    from xmodal_data.synth.contact_sheet import make_contact_sheet
    from xmodal_data.synth.dataset import generate_synth

    config = SynthConfig.profile(s.profile).model_copy(update={"seed": s.seed})
    manifest = generate_synth(s.out, config, workers=s.workers, progress=s.progress)
    if s.encode:
        encode_manifest(manifest, workers=s.workers, flow_method=s.flow_method, progress=s.progress)
        make_contact_sheet(manifest, s.out / "contact_sheet.png")
    print(f"wrote {manifest}")


def _encode(s: EncodeSettings) -> None:
    from xmodal_data.encode import encode_manifest

    counts = encode_manifest(s.manifest, s.modalities, s.workers, s.flow_method, s.progress)
    print(f"encoded {counts} -> {s.manifest}")


def _contact_sheet(s: ContactSheetSettings) -> None:
    from xmodal_data.synth.contact_sheet import make_contact_sheet

    print(f"wrote {make_contact_sheet(s.manifest, s.out, n=s.rows)}")


def _validate(s: ValidateSettings) -> None:
    from shared.manifest import read_manifest

    m = read_manifest(s.manifest)
    missing = []
    if s.files:
        fields = ("rgb", "depth", "raw_depth", "hha", "rgb_next", "flow", "flow_gt", "flow_occlusion")
        for f in m:
            missing += [f"{f.id}.{k}: {m.path(v)}" for k in fields if (v := getattr(f, k)) and not m.path(v).is_file()]
    print(f"{s.manifest}: dataset {m.header.dataset!r}, {len(m)} frames, splits {m.splits()}, classes {m.classes}")
    if missing:
        raise XModalError(f"{len(missing)} referenced files are missing, e.g.\n  " + "\n  ".join(missing[:10]))


def _nyud2(s: Nyud2Settings) -> None:
    from xmodal_data.importers.nyud2 import import_nyud2

    print(f"wrote {import_nyud2(s.mat, s.meta, s.out, crop=s.crop, limit=s.limit, progress=s.progress)}")


def _video(s: VideoSettings) -> None:
    from xmodal_data.importers.video import import_video

    path = import_video(
        s.source, s.out, dataset=s.dataset, stride=s.stride, step=s.step, max_side=s.max_side,
        split=s.split, progress=s.progress,
    )
    print(f"wrote {path}")


def _nyud2_raw(s: Nyud2RawSettings) -> None:
    from shared.errors import ConfigError
    from xmodal_data.importers.nyu_toolbox import NYU_CALIBRATION, read_calibration
    from xmodal_data.importers.nyud2_raw import import_nyud2_raw
    from xmodal_data.importers.nyud2_scenes import read_scene_splits, scene_splits_from_labeled

    if s.scene_splits is not None and s.labeled_mat is None:
        scene_splits = read_scene_splits(s.scene_splits)
    elif s.scene_splits is None and s.labeled_mat is not None and s.meta is not None:
        scene_splits = scene_splits_from_labeled(s.labeled_mat, s.meta / "nyusplits.mat")
    else:
        raise ConfigError("give the scene splits either as --scene-splits FILE or as --labeled-mat "
                          "nyu_depth_v2_labeled.mat --meta DIR (with nyusplits.mat)")
    path = import_nyud2_raw(
        s.root, s.out, scene_splits, splits=s.splits, every_s=s.every_s,
        calibration=read_calibration(s.calibration) if s.calibration else NYU_CALIBRATION,
        fill_alpha=s.fill_alpha, fill_solver=s.fill_solver, max_sync_gap_s=s.max_sync_gap_s,
        allow_missing_scenes=s.allow_missing_scenes, workers=s.workers, progress=s.progress,
    )
    print(f"wrote {path}")


def _ucf101(s: Ucf101Settings) -> None:
    from xmodal_data.importers.ucf101 import import_ucf101

    path = import_ucf101(
        s.root, s.list, s.out, frames_per_video=s.frames_per_video, split=s.split, flow_method=s.flow_method,
        skip_bad=s.skip_bad, workers=s.workers, progress=s.progress,
    )
    print(f"wrote {path}")


def _jhmdb(s: JhmdbSettings) -> None:
    from xmodal_data.importers.jhmdb import import_jhmdb

    path = import_jhmdb(s.root, s.split, s.out, flow_method=s.flow_method, workers=s.workers, progress=s.progress)
    print(f"wrote {path}")


_COMMANDS: dict[str, Command] = {
    "synth": (SynthSettings, _synth, "render the built-in paired dataset (RGB, depth, raw depth, clips), "
              "encode HHA + flow, draw a contact sheet"),
    "encode": (EncodeSettings, _encode, "encode HHA and flow images for a manifest (parallel, resumable)"),
    "contact-sheet": (ContactSheetSettings, _contact_sheet, "draw RGB | depth | HHA | flow rows with boxes"),
    "validate": (ValidateSettings, _validate, "check a manifest (line/field errors) and its files"),
    "nyud2": (Nyud2Settings, _nyud2, "import the NYUD2 labeled set (.mat) with Gupta et al.'s splits and 19 classes"),
    "video": (VideoSettings, _video, "import a video or frame folder as frame pairs + flow images"),
    "nyud2-raw": (Nyud2RawSettings, _nyud2_raw, "import NYUD2 raw video of the train/val scenes as synced, "
                  "registered, hole-filled RGB-depth pairs with HHA (the NYU toolbox's steps)"),
    "ucf101": (Ucf101Settings, _ucf101, "import UCF101 videos of a split list as evenly spaced frame pairs "
               "+ flow images"),
    "jhmdb": (JhmdbSettings, _jhmdb, "import a JHMDB split: person boxes from puppet masks labelled with the "
              "action, flow images of (t, t+1)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_commands(
        "xmodal-data",
        "Make and prepare paired datasets for cross-modal supervision transfer. "
        "Every flag can also be set by the environment variable named in its help.",
        _COMMANDS, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
