"""``xmodal-demo --profile tiny`` end to end: both teachers (the ImageNet-like crop classifier and the adapted RGB
detector started from it), the untrained control, HHA / flow / exact-flow students, merged tables and goals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_demo_in_the_papers_shape(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "xmodal_pipeline.demo", "--profile", "tiny", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = out / "runs"
    # the ImageNet-like teacher: trained on the pretraining renders' 36 labels, the RGB detector started from it
    assert json.loads((runs / "imagenet" / "summary.json").read_text())["classes"] == 36
    rgb = json.loads((runs / "rgb" / "config.json").read_text())
    assert rgb["init"]["init"] == "copy-rgb" and rgb["init"]["checkpoint"].endswith("imagenet/checkpoint.pt")
    # every teacher has a store and students of every variant; the exact-flow manifest is the ceiling's input
    for store in ("store", "store-imagenet", "store-untrained"):
        assert (out / store / "zarr.json").is_file()
    for prefix in ("transfer", "imagenet", "control"):
        for variant in ("hha", "flow", "flow-gt"):
            summary = json.loads((runs / f"{prefix}-{variant}" / "summary.json").read_text())
            assert summary["held_out"]["frames"] > 0
    gt = json.loads((runs / "transfer-flow-gt" / "config.json").read_text())["settings"]["manifest"]
    assert gt.endswith("manifest_gtflow.jsonl")
    # the second teacher's comparison copies its own weights and reuses the teacher-free runs of the first
    second = runs / "compare-hha-imagenet"
    assert (second / "no-init-seed0").is_symlink() and (second / "rgb").is_symlink()
    assert not (second / "transfer-seed0").is_symlink()
    copied = json.loads((second / "copy-rgb-seed0" / "config.json").read_text())["init"]["checkpoint"]
    assert copied.endswith("imagenet/checkpoint.pt")
    assert "control-seed0" not in os.listdir(second)
    # the comparisons' detectors train the profile's detector_iterations (40), the RGB detector its own (30)
    for row in ("no-init-seed0", "control-frozen-seed0", "transfer-seed0"):
        assert json.loads((runs / "compare-flow" / row / "config.json").read_text())["settings"]["iterations"] == 40
    assert json.loads((runs / "rgb" / "config.json").read_text())["settings"]["iterations"] == 30
    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results["tables"]) == {"hha", "flow", "flow-gt"}
    rows = results["tables"]["hha"]["table"]["rows"]
    assert {"transfer:adapted", "transfer:imagenet", "copy-rgb:imagenet", "control-frozen", "fusion:imagenet"} <= set(
        rows)
    # the fusion weight is chosen per seed on the validation split, where RGB and the transfer detector were scored
    fusion_val = rows["fusion-val:adapted"]["runs"][0]
    assert fusion_val["val_split"] == "depth_val" and 0 <= fusion_val["weight"] <= 1
    assert (runs / "compare-hha" / "transfer-seed0" / "eval-depth_val" / "roi_outputs.npz").is_file()
    goals = [g["goal"] for g in results["tables"]["flow-gt"]["goals"]]
    assert "control within 2 of no init" in goals and len(goals) == 9
    report = (out / "report" / "report.md").read_text()
    assert "## ImageNet-like teacher" in report and "Goals (flow on exact flow images (the ceiling))" in report
    for name in ("comparison_hha.png", "comparison_flow-gt.png", "transfer_curves.png", "contact_sheet.png"):
        assert (out / "report" / name).stat().st_size > 1000
