"""Both recipes end to end on small inputs in the exact real layouts, with random teacher weights (``--profile ci``):
bad input first (each fails with one line naming the file, and its stage is not marked done), then the fixed
inputs resume where the failed run stopped and finish with the full report; a last rerun skips every stage.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import scipy.io

from shared.manifest import read_manifest
from tests.xmodal_pipeline.recipe_fixtures import JHMDB_VIDEOS, write_jhmdb_inputs, write_nyud2_inputs
from xmodal_pipeline.recipes.cli import main
from xmodal_pipeline.stages import read_timings

pytestmark = pytest.mark.slow

SMALL = ["--profile", "ci", "--weights", "random", "--workers", "1", "--transfer-iterations", "6",
         "--transfer-batch-size", "4", "--detector-iterations", "4"]


def _fails(argv, capsys, pattern: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    return captured.out


def _finishes(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _check_tables(results: dict, evaluations: list[str], teachers=("alexnet", "vgg16")) -> None:
    rows = {"no-init", "copy-rgb", "no-init-frozen", "copy-rgb-frozen", "rgb"}
    rows |= {f"{kind}-{t}" for t in teachers for kind in ("transfer", "fusion")}
    rows |= {f"transfer-{t}-frozen" for t in teachers}
    assert list(results["tables"]) == evaluations
    for table in results["tables"].values():
        assert set(table) == rows
        assert all(0.0 <= r["mean"] <= 1.0 and r["n"] == 1 for r in table.values())


def test_nyud2_recipe(tmp_path, sample_data, capsys):
    inputs = write_nyud2_inputs(tmp_path / "in", sample_data / "nyud2_meta")
    out, raw = tmp_path / "out", inputs.raw
    argv = ["nyud2", *SMALL, "--out", str(out), "--nyud2-limit", "10", "--every-s", "0.5", "--max-sync-gap-s",
            "0.2", *inputs.args()]
    raw_manifest = out / "data" / "nyud2_raw" / "manifest.jsonl"

    def not_done() -> None:
        assert not raw_manifest.exists() and "import raw" not in read_timings(out / "report" / "timings.json")

    # a scene the labelled set puts in val is missing
    shutil.move(raw / "kitchen_0003", tmp_path / "aside")
    _fails(argv, capsys, r"^xmodal-recipe nyud2: error: import-raw failed \(exit code 2\): xmodal-data nyud2-raw: "
                         r"error: 1 of the 2 train/val scenes are missing under .*raw/kitchen_0003")
    not_done()
    assert "seconds" in read_timings(out / "report" / "timings.json")["import labelled"]
    shutil.move(tmp_path / "aside", raw / "kitchen_0003")

    # a truncated depth PGM
    pgm = sorted((raw / "bedroom_0001").glob("d-*.pgm"))[5]  # t = 0.5 s: a sampled frame
    good = pgm.read_bytes()
    pgm.write_bytes(good[:-100])
    log = _fails(argv, capsys, rf"import-raw failed .*{re.escape(str(pgm))} is truncated")
    assert "== import labelled (already done: skipped)" in log
    not_done()
    pgm.write_bytes(good)

    # timestamps that never match: the kitchen's RGB frames carry times 5 s after its depth frames
    ppms = sorted((raw / "kitchen_0003").glob("r-*.ppm"))
    moved = {p: p.with_name(f"r-{float(p.name.split('-')[1]) + 5:f}-{p.name.split('-')[2]}") for p in ppms}
    for a, b in moved.items():
        a.rename(b)
    _fails(argv, capsys, r"import-raw failed .*scene .*kitchen_0003: no depth frame has an RGB frame within 0.2 s "
                         r"\(nearest pair \d\.\d+ s apart\); timestamps never match")
    not_done()
    for a, b in moved.items():
        b.rename(a)

    # fixed: the run resumes after the labelled import and finishes
    log = _finishes(argv, capsys)
    assert "== import labelled (already done: skipped)" in log and "== import raw\n" in log
    timings = read_timings(out / "report" / "timings.json")
    assert list(timings) == ["weights", "import labelled", "import raw", "proposals", "precompute", "students",
                             "detectors val", "detectors test"]
    assert all(v["seconds"] >= 0 for v in timings.values())
    transfer = read_manifest(raw_manifest)
    assert set(transfer.splits()) == {"train", "val"} and not any("office_0002" in f.id for f in transfer)  # test
    results = json.loads((out / "report" / "results.json").read_text())
    _check_tables(results, ["val", "test"])
    assert results["settings"]["profile"] == "ci" and results["settings"]["seeds"] == [0]
    report = (out / "report" / "report.md").read_text()
    for text in ("### HHA detection on `val`", "### HHA detection on `test`", "supervision transfer from "
                 "random-weight VGG16, trunk frozen", "RGB + HHA (late fusion; HHA from AlexNet)",
                 "| detectors test |", "proposals: MCG boxes"):
        assert text in report
    for teacher in ("alexnet", "vgg16"):  # each student regressed its own teacher's map (padding searched)
        store = json.loads((out / "stores" / teacher / "nyud2_raw" / "zarr.json").read_text())["attributes"]
        summary = json.loads((out / "runs" / "students" / f"hha-{teacher}" / "summary.json").read_text())
        assert summary["teacher"].startswith(teacher) and store["xmodal"]["shape"][0] == {"alexnet": 256,
                                                                                          "vgg16": 512}[teacher]
    linked = out / "runs" / "test" / "compare-vgg16" / "no-init-seed0"
    assert linked.is_symlink() and not (out / "runs" / "test" / "compare-vgg16" / "transfer-seed0").is_symlink()

    # everything done: a rerun only checks
    log = _finishes(argv, capsys)
    assert log.count("(already done: skipped)") == len(timings)
    assert json.loads((out / "report" / "results.json").read_text())["tables"] == results["tables"]


def test_jhmdb_recipe(tmp_path, capsys):
    inputs = write_jhmdb_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["jhmdb", *SMALL, "--out", str(out), *inputs.args()]

    # a UCF101 video that cannot be decoded
    avi = inputs.ucf101 / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g09_c01.avi"
    good = avi.read_bytes()
    avi.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(3000))
    _fails(argv, capsys, r"^xmodal-recipe jhmdb: error: import-ucf101 failed \(exit code 2\): xmodal-data ucf101: "
                         r"error: .*v_HandStandPushups_g09_c01\.avi")
    assert not (out / "data" / "ucf101" / "manifest.jsonl").exists()
    avi.write_bytes(good)

    # a puppet mask of the wrong size (transposed)
    video = JHMDB_VIDEOS["wave"][1]
    mask = inputs.jhmdb / "puppet_mask" / "wave" / video / "puppet_mask.mat"
    original = scipy.io.loadmat(mask)["part_mask"]
    scipy.io.savemat(mask, {"part_mask": np.ascontiguousarray(original.transpose(1, 0, 2))})
    log = _fails(argv, capsys, rf"import-jhmdb-split1 failed .*{re.escape(video)}/puppet_mask\.mat: part_mask is "
                               r"160x120x6 but the frames are 120x160")
    assert "== import ucf101\n" in log
    assert not (out / "data" / "jhmdb" / "manifest_split1.jsonl").exists()
    scipy.io.savemat(mask, {"part_mask": original})

    log = _finishes(argv, capsys)
    assert "== import ucf101 (already done: skipped)" in log
    results = json.loads((out / "report" / "results.json").read_text())
    _check_tables(results, ["split1", "split2", "split3"])
    for key, row in results["mean"].items():  # the mean over the three splits
        split_means = [results["tables"][k][key]["mean"] for k in ("split1", "split2", "split3")]
        assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(split_means))
    report = (out / "report" / "report.md").read_text()
    assert "### FLOW detection on `flow_test, mean over split1, split2, split3`" in report
    split2 = read_manifest(out / "data" / "jhmdb" / "manifest_split2.jsonl")
    assert split2.classes[0] == "brush_hair" and len(split2.classes) == 21
    assert {f.split for f in split2 if f".{JHMDB_VIDEOS['wave'][1]}." in f.id} == {"flow_test"}  # split 2's test
