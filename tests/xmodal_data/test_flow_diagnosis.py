"""bench.flow_diagnosis on the tiny synthetic set: EPE against ground truth, ground-truth flow images."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.flow_diagnosis import REPO
from shared.flow_image import flip_flow
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from xmodal_data.flow import read_flow_file
from xmodal_data.synth import SynthConfig, generate_synth

TINY = SynthConfig.profile("tiny")


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data" / "synth"  # the layout of an `xmodal-demo --out` folder
    generate_synth(out, TINY, workers=1, progress=False)
    from xmodal_data.encode import encode_manifest

    encode_manifest(out / "manifest.jsonl", ["flow"], workers=1, progress=False)
    return out / "manifest.jsonl"


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.flow_diagnosis", *map(str, args)], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


def test_epe_summary(tiny_manifest, tmp_path):
    out = tmp_path / "epe.json"
    printed = _bench("epe", "--manifest", tiny_manifest, "--workers", "1", "--out", out, "--methods", "dis", "dis-fine")
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == {"flow_transfer", "flow_train", "flow_test", "flow_val", "all"}
    assert summary["all"]["frames"] == 12 and "| all | 12 |" in printed
    for s in summary.values():
        # the end-point error of zero flow is the mean ground-truth magnitude, by definition
        assert s["epe_zero"] == pytest.approx(s["gt_magnitude"], rel=1e-9)
        assert 0 < s["epe_dis"]["visible"] < 10 and 0 < s["epe_dis-fine"]["visible"] < 10
        # the stored flow image is DIS, quantised: its error is DIS's, within the 1/32 px rounding
        assert abs(s["epe_flow_image"]["visible"] - s["epe_dis"]["visible"]) < 0.05
        assert s["own_motion_object"] > 0.5 and s["contrast_gt"]["objects"] > 0
    assert out.with_suffix(".md").read_text().startswith("| split |") and "| dis-fine |" in printed


def test_gt_images_manifest_points_at_encoded_ground_truth(tiny_manifest):
    _bench("images", "--method", "gt", "--manifest", tiny_manifest, "--workers", "1")
    before, after = read_manifest(tiny_manifest), read_manifest(tiny_manifest.parent / "manifest_gtflow.jsonl")
    assert [f.id for f in before] == [f.id for f in after]
    changed = 0
    for a, b in zip(before, after, strict=True):
        assert a.model_copy(update={"flow": b.flow, "flow_mirror": b.flow_mirror}) == b  # only the flow images differ
        if a.flow_gt is not None:
            gt = read_flow_file(after.path(b.flow_gt))
            inside = (np.abs(gt) < 7.9).all(axis=-1)
            for path, want, ok in ((b.flow, gt, inside), (b.flow_mirror, flip_flow(gt), inside[:, ::-1])):
                decoded = (read_rgb(after.path(path))[..., :2].astype(np.float64) - 128) / 16  # mirror: exact too
                assert np.abs(decoded - want)[ok].max() <= 1 / 32 + 1e-6
            changed += 1
    assert changed == 12  # every flow clip: 4 transfer, 3 train, 3 test, 2 val


def test_variant_changes_the_clips_not_frame_t(tiny_manifest, tmp_path):
    demo = tiny_manifest.parents[2]
    _bench("variant", "--demo", demo, "--motion", '{"camera_step_px": [3, 5]}', "--out", tmp_path / "v",
           "--workers", "1")
    base, variant = read_manifest(tiny_manifest), read_manifest(tmp_path / "v" / "manifest_dis.jsonl")
    assert [f.id for f in variant] == [f.id for f in base if f.rgb_next] + [f.id for f in base if not f.rgb_next]
    assert read_manifest(tmp_path / "v" / "manifest_gtflow.jsonl").splits() == base.splits()
    for f in variant:
        ours, theirs = variant.path(f.rgb).read_bytes(), base.path(base[f.id].rgb).read_bytes()
        assert ours == theirs
        if f.rgb_next:
            assert variant.path(f.rgb_next).read_bytes() != base.path(base[f.id].rgb_next).read_bytes()
        else:
            assert variant.path(f.rgb) == base.path(base[f.id].rgb)  # the demo's own file
    assert json.loads((tmp_path / "v" / "variant.json").read_text())["motion"]["camera_step_px"] == [3.0, 5.0]
