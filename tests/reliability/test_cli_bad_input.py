"""Every CLI given a corrupt, missing or mismatched image or manifest fails (exit != 0) naming the file or line,
and leaves nothing marked done: no rewritten manifest, no summary.json, no done bits for the bad frame's shard.
Also one line, no traceback, for bad start-up input of ``serve`` (missing stores, duplicate ids, mixed teachers),
a directory given as the manifest, and settings that only fail together (``detect --init transfer``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from shared.manifest import read_manifest
from teacher_server.store import FeatureStore
from tests.reliability.conftest import precompute_args
from tests.servers import args_of, run_cli

pytestmark = pytest.mark.slow  # about 30 CLI processes
BAD_LINE = 3
FILE_FAULTS = ["missing_manifest", "bad_line", "non_utf8_line", "missing_image", "corrupt_image"]


@dataclass
class Case:
    """A copy of the tiny synthetic set with one fault; ``names`` is what the error message must contain."""

    root: Path
    manifest: Path
    names: str
    frame: str = ""


def _frame(manifest: Path, split: str, field: str) -> tuple[str, Path]:
    m = read_manifest(manifest)
    f = next(f for f in m.split(split) if getattr(f, field))
    return f.id, m.path(getattr(f, field))


def missing_manifest(case: Case, split: str, field: str) -> None:
    case.manifest.unlink()
    case.names = str(case.manifest)


def bad_line(case: Case, split: str, field: str) -> None:
    lines = case.manifest.read_text().splitlines(keepends=True)
    lines[BAD_LINE - 1] = '{"id": "synth.broken", "split": \n'
    case.manifest.write_text("".join(lines))
    case.names = f"{case.manifest}:{BAD_LINE}"


def non_utf8_line(case: Case, split: str, field: str) -> None:
    """A line in Latin-1 (``é`` as the single byte 0xE9), not UTF-8."""
    lines = case.manifest.read_bytes().splitlines(keepends=True)
    lines[BAD_LINE - 1] = b'{"id": "synth.caf\xe9", "split": "rgb_train", "rgb": "x.png"}\n'
    case.manifest.write_bytes(b"".join(lines))
    case.names = f"{case.manifest}:{BAD_LINE}"


def missing_image(case: Case, split: str, field: str) -> None:
    case.frame, path = _frame(case.manifest, split, field)
    path.unlink()
    case.names = str(path)


def corrupt_image(case: Case, split: str, field: str) -> None:
    case.frame, path = _frame(case.manifest, split, field)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    case.names = str(path)


def resized_image(case: Case, split: str, field: str) -> None:
    """A valid image of another size than the frame's others (and than its intrinsics say)."""
    case.frame, path = _frame(case.manifest, split, field)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_NEAREST))
    case.names = str(path)


def dropped_field(case: Case, split: str, field: str) -> None:
    """The manifest no longer matches the files: ``field`` is dropped from one frame that needs it."""
    case.frame, _ = _frame(case.manifest, split, field)
    lines = [json.loads(line) for line in case.manifest.read_text().splitlines()]
    for obj in lines:
        if obj.get("id") == case.frame:
            del obj[field]
    case.manifest.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    case.names = case.frame


FAULTS: dict[str, Callable[[Case, str, str], None]] = {
    f.__name__: f for f in (missing_manifest, bad_line, non_utf8_line, missing_image, corrupt_image, resized_image,
                            dropped_field)
}


@pytest.fixture
def make_case(tmp_path, synth_tiny) -> Callable[[str, str, str], Case]:
    def make(fault: str, split: str, field: str) -> Case:
        root = tmp_path / "data"
        shutil.copytree(synth_tiny.parent, root)
        case = Case(root, root / synth_tiny.name, "")
        FAULTS[fault](case, split, field)
        return case

    return make


def _fails_naming(proc, case: Case) -> None:
    assert proc.returncode not in (0, None), proc.stdout[-2000:]
    assert case.names in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("fault", ["missing_manifest", "bad_line", "non_utf8_line", "missing_image"])
def test_xmodal_data_validate(fault, make_case):
    case = make_case(fault, "depth_transfer", "hha")
    _fails_naming(run_cli("xmodal_data.cli", "validate", "--manifest", str(case.manifest), check=False), case)


def test_xmodal_data_validate_a_directory(synth_tiny):
    folder = synth_tiny.parent
    proc = run_cli("xmodal_data.cli", "validate", "--manifest", str(folder), check=False)
    _fails_naming(proc, Case(folder, folder, f"{folder}: is a directory, not a manifest file"))
    assert f"did you mean {synth_tiny}?" in proc.stderr  # the manifest inside it


@pytest.mark.parametrize("fault", [*FILE_FAULTS, "resized_image"])
def test_xmodal_data_encode(fault, make_case):
    case = make_case(fault, "depth_transfer", "depth")
    shutil.rmtree(case.root / "hha")  # so every HHA image has to be encoded again
    before = case.manifest.read_bytes() if case.manifest.is_file() else None
    proc = run_cli("xmodal_data.cli", "encode", "--manifest", str(case.manifest), "--modalities", "hha",
                   "--workers", "1", "--no-progress", check=False)
    _fails_naming(proc, case)
    if before is not None:  # the manifest is rewritten only after every frame succeeded
        assert case.manifest.read_bytes() == before


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_xmodal_data_contact_sheet(fault, make_case):
    case = make_case(fault, "rgb_train", "rgb")  # the sheet draws labelled frames, the first one among them
    out = case.root / "sheet.png"
    proc = run_cli("xmodal_data.cli", "contact-sheet", "--manifest", str(case.manifest), "--out", str(out),
                   "--rows", "64", check=False)
    _fails_naming(proc, case)
    assert not out.exists()


@pytest.mark.parametrize("fault", [*FILE_FAULTS, "resized_image"])
def test_teacher_server_precompute(fault, make_case, synth_teacher_ckpt):
    case = make_case(fault, "depth_transfer", "rgb")
    store = case.root / "store"
    proc = run_cli("teacher_server.cli", "precompute",
                   *precompute_args(store, case.manifest, synth_teacher_ckpt, shard_frames=4, batch_size=2),
                   check=False)
    _fails_naming(proc, case)
    if case.frame and store.is_dir():  # the bad frame's shard is not marked done (earlier shards may be)
        col = FeatureStore.open(store).collections["synth"]
        assert not col.done()[col.ids.index(case.frame)]


def _second_store(kind: str, root: Path, synth_store: Path, synth_tiny: Path, teacher_ckpt: Path) -> Path:
    """A store to serve beside ``synth_store``: a copy (same frame ids) or the same frames of another teacher."""
    if kind == "duplicate_ids":
        return Path(shutil.copytree(synth_store, root / "copy"))
    from shared.features import encoding
    from shared.nets.teachers import load_teacher
    from teacher_server.precompute import precompute

    precompute(root / "other", [synth_tiny], load_teacher("checkpoint", str(teacher_ckpt)), encoding("f32-zstd1"),
               shard_frames=8, loader_workers=0, progress=False)
    return root / "other"


@pytest.mark.parametrize("fault", ["missing_store", "second_of_two_missing", "duplicate_ids", "mixed_teachers"])
def test_teacher_server_serve_start_up(fault, tmp_path, synth_store, synth_tiny, teacher_ckpt):
    """serve checks its stores before uvicorn starts: exit 2 with one line (was a lifespan traceback, exit 3)."""
    missing = tmp_path / "no-store"
    reason = {"duplicate_ids": "is in two collections", "mixed_teachers": "hold different teachers"}.get(fault, "")
    if fault == "missing_store":
        stores, names = str(missing), f"no feature store at {missing}"
    elif fault == "second_of_two_missing":  # a comma splits --stores as it splits TEACHER_STORES
        stores, names = f"{synth_store},{missing}", f"no feature store at {missing} (missing zarr.json)"
    else:
        other = _second_store(fault, tmp_path, synth_store, synth_tiny, teacher_ckpt)
        stores, names = f"{synth_store},{other}", str(other)
    proc = run_cli("teacher_server.cli", "serve", "--stores", stores, "--port", "0", timeout=120, check=False)
    _fails_naming(proc, Case(tmp_path, missing, names))
    assert reason in proc.stderr
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]


def test_student_trainer_detect_init_without_checkpoint(tmp_path, synth_tiny):
    proc = run_cli("student_trainer.cli", "detect", "--modality", "hha", "--init", "transfer", "--manifest",
                   str(synth_tiny), "--out", str(tmp_path / "det"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "student-trainer detect: error: invalid settings: --init transfer needs " \
                                  "--trunk-checkpoint", proc.stderr[-3000:]  # no "--? / STUDENT_DETECT_?", no dict


def test_teacher_server_verify_missing_store(tmp_path):
    case = Case(tmp_path, tmp_path / "no-store", str(tmp_path / "no-store"))
    _fails_naming(run_cli("teacher_server.cli", "verify", "--store", str(case.manifest), check=False), case)


@pytest.mark.parametrize("fault", [*FILE_FAULTS, "dropped_field"])
def test_student_trainer_transfer(fault, make_case, teacher_url, synth_tiny):
    case = make_case(fault, "depth_transfer", "hha")
    out = case.root / "run"
    frames = len(read_manifest(synth_tiny).split("depth_transfer"))
    proc = run_cli("student_trainer.cli", "transfer", *args_of(
        modality="hha", teacher_url=teacher_url, manifest=case.manifest, out=out, profile="tiny", iterations=2,
        batch_size=frames, loader_workers=0), "--no-progress", check=False)  # step 0 reads every frame
    _fails_naming(proc, case)
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("fault", FILE_FAULTS)
def test_student_trainer_detect(fault, make_case):
    case = make_case(fault, "depth_train", "hha")
    out = case.root / "det"
    proc = run_cli("student_trainer.cli", "detect", *args_of(modality="hha", manifest=case.manifest, out=out,
                                                             profile="tiny", iterations=2),
                   check=False)
    _fails_naming(proc, case)
    assert not (out / "summary.json").exists()
