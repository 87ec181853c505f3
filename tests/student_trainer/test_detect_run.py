"""Detector runs end to end on the tiny synthetic set: reports, resume, inits, teacher loading, fusion, CLI."""

import json
import shutil

import numpy as np
import pytest
import torch

from shared.errors import ConfigError, DataError
from shared.manifest import read_manifest
from shared.modalities import modality
from shared.nets.teachers import load_teacher
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer import detect
from student_trainer.checkpoint import load_checkpoint, save_checkpoint
from student_trainer.cli import main
from student_trainer.detect import build_detect, run_detect
from student_trainer.detect_eval import ROI_OUTPUTS, RoIOutputs, evaluate_fused, fused_map_by_weight
from student_trainer.detect_settings import DetectSettings
from student_trainer.logs import read_metrics
from student_trainer.proposals import load_proposals, save_proposals
from student_trainer.student import TransferModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def proposals(synth_tiny, tmp_path_factory):
    """Jittered copies of the true boxes plus random boxes for every frame (deterministic, generator-free)."""
    rng = np.random.default_rng(0)
    props = {}
    for f in read_manifest(synth_tiny):
        h, w = f.intrinsics.height, f.intrinsics.width
        boxes = np.array([o.box for o in f.objects or ()], np.float32).reshape(-1, 4)
        jitter = np.repeat(boxes, 8, axis=0) + rng.normal(0, 2.5, (8 * len(boxes), 4))
        xy = rng.uniform(0, [w - 8, h - 8], (150, 2))
        rand = np.concatenate([xy, xy + rng.uniform(6, 40, (150, 2))], 1)
        props[f.id] = np.concatenate([jitter, rand]).astype(np.float32)
    path = tmp_path_factory.mktemp("proposals") / "proposals.npz"
    save_proposals(path, props)
    return path


def _settings(manifest, out, proposals, **kw):
    base = {"profile": "tiny", "iterations": 8, "checkpoint_every": 4, "log_every": 2, "progress": False,
            "loader_workers": 0, "eval_batch_size": 3}
    return DetectSettings(manifest=manifest, out=out, proposals=proposals, **(base | kw))


@pytest.fixture(scope="module")
def student_ckpt(tmp_path_factory):
    """A supervision-transfer student checkpoint (trunk + adapter) with non-trivial BatchNorm statistics."""
    torch.manual_seed(1)
    model = TransferModel(AlexNetTrunk(trunk_spec("alexnet-small", width=0.5)), teacher_channels=16).train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 80) * 2 + 0.5)
    mod = modality("hha")
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_checkpoint(path, {"model": model.state_dict(), "trunk": model.trunk.describe(mod.mean, mod.std),
                           "modality": "hha", "step": 100})
    return path


@pytest.fixture(scope="module")
def rgb_run(synth_tiny, proposals, tmp_path_factory):
    out = tmp_path_factory.mktemp("rgb_run")
    summary = run_detect(_settings(synth_tiny, out, proposals, modality="rgb"))
    return out, summary


@pytest.fixture(scope="module")
def hha_frozen_run(synth_tiny, proposals, student_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("hha_run")
    run_detect(_settings(synth_tiny, out, proposals, modality="hha", init="transfer-frozen",
                         trunk_checkpoint=student_ckpt))
    return out


def test_run_writes_checkpoint_metrics_and_reports(rgb_run):
    out, summary = rgb_run
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "eval.json", "ap.md", "pr_curves.png",
                 "detections.npz", ROI_OUTPUTS, "summary.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval.json").read_text())
    assert report["split"] == "depth_test" and report["metric"] == "all-point"
    assert set(report["ap"]) == set(report["classes"]) and summary["mAP"] == report["mAP"]
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [2, 4, 6, 8]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 8 and ckpt["modality"] == "rgb" and ckpt["detector"]["fc_width"] == 32
    outputs = RoIOutputs.load(out / ROI_OUTPUTS)
    assert outputs.logits.shape == (outputs.offsets[-1], 7) and outputs.deltas.shape == (outputs.offsets[-1], 28)
    with np.load(out / "detections.npz") as d:
        assert d["boxes"].shape == (d["offsets"][-1], 4) and d["labels"].max() < 6
        assert (np.diff(d["offsets"]) <= 100).all()
    assert "| rgb random |" in (out / "ap.md").read_text()


def test_detector_checkpoint_loads_as_teacher(rgb_run):
    out, _ = rgb_run
    teacher = load_teacher("checkpoint", str(out / "checkpoint.pt"))
    assert teacher.identity.arch == "alexnet-small" and teacher.identity.mean == modality("rgb").mean
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    assert torch.equal(teacher.trunk.conv1[0].weight, state["trunk.conv1.0.weight"])
    assert teacher.trunk(torch.zeros(1, 3, 64, 80)).shape[1] == teacher.identity.out_channels


def test_frozen_init_keeps_trunk_weights_and_bn_statistics(hha_frozen_run, student_ckpt):
    student = {k[len("trunk."):]: v for k, v in load_checkpoint(student_ckpt)["model"].items()
               if k.startswith("trunk.")}
    ckpt = load_checkpoint(hha_frozen_run / "checkpoint.pt")
    detector = {k[len("trunk."):]: v for k, v in ckpt["model"].items() if k.startswith("trunk.")}
    assert student.keys() == detector.keys() and any("running_var" in k for k in student)
    assert all(torch.equal(student[k], detector[k]) for k in student)
    assert ckpt["init"]["init"] == "transfer-frozen" and ckpt["trunk"]["spec"]["width"] == 0.5


@pytest.mark.parametrize("init", ["random", "copy-rgb"])
def test_freeze_trunk_applies_to_every_init(synth_tiny, proposals, rgb_run, tmp_path, init):
    kw = {"trunk_checkpoint": rgb_run[0] / "checkpoint.pt"} if init == "copy-rgb" else {}
    settings = _settings(synth_tiny, tmp_path, proposals, modality="hha", init=init, freeze_trunk=True, **kw)
    initial = build_detect(settings).model.trunk.state_dict()  # same seed: the weights the run starts from
    summary = run_detect(settings)
    trained = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert summary["trunk_frozen"] and all(torch.equal(v, trained[f"trunk.{k}"]) for k, v in initial.items())
    heads = [k for k in trained if k.startswith("fc6")]
    assert heads and not torch.equal(trained[heads[0]], build_detect(settings).model.state_dict()[heads[0]])


def test_trunk_lr_factor_reaches_the_trunk_only(synth_tiny, proposals, tmp_path):
    settings = _settings(synth_tiny, tmp_path, proposals, modality="hha", trunk_lr_mult=0.0)
    initial = build_detect(settings).model.state_dict()
    summary = run_detect(settings)
    trained = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    weights = [k for k in initial if k.startswith("trunk.") and k.endswith("weight")]
    assert not summary["trunk_frozen"] and weights
    assert all(torch.equal(initial[k], trained[k]) for k in weights)  # lr 0 on the trunk: its weights stay
    assert not torch.equal(initial["fc6.0.weight"], trained["fc6.0.weight"])


def test_fused_evaluation(rgb_run, hha_frozen_run, synth_tiny):
    rgb_dir, _ = rgb_run
    fused = evaluate_fused(rgb_dir, hha_frozen_run, synth_tiny, "depth_test", out=hha_frozen_run / "fused")
    assert len(fused.classes) == 6 and np.isfinite(fused.mean_ap)
    assert (hha_frozen_run / "fused" / "eval.json").is_file()
    alone = json.loads((rgb_dir / "eval.json").read_text())["mAP"]
    assert evaluate_fused(rgb_dir, rgb_dir, synth_tiny).mean_ap == pytest.approx(alone, abs=1e-6)
    with pytest.raises(DataError, match="split"):
        evaluate_fused(rgb_dir, hha_frozen_run, synth_tiny, "flow_test")
    # several weights from one read of both runs: the same numbers as one evaluate_fused per weight
    by_weight = fused_map_by_weight(rgb_dir, hha_frozen_run, synth_tiny, "depth_test", [0.3, 0.5, 1.0])
    assert by_weight[0.5] == pytest.approx(fused.mean_ap, abs=1e-9)
    assert by_weight[1.0] == pytest.approx(alone, abs=1e-6)  # weight 1: detector a alone
    assert by_weight[0.3] == pytest.approx(evaluate_fused(rgb_dir, hha_frozen_run, synth_tiny, "depth_test",
                                                          weight=0.3).mean_ap, abs=1e-9)


def test_a_frozen_run_is_reused_at_any_trunk_lr_factor_its_trunk_never_learns_at(hha_frozen_run):
    summary = json.loads((hha_frozen_run / "summary.json").read_text())
    assert detect.detect_once(detect.run_settings(hha_frozen_run, trunk_lr_mult=0.1)) == summary
    with pytest.raises(ConfigError, match="made with lr="):
        detect.detect_once(detect.run_settings(hha_frozen_run, lr=0.5))


def test_a_finished_run_scores_another_split_from_its_checkpoint(rgb_run, tmp_path):
    rgb_dir, summary = rgb_run
    assert detect.run_settings(rgb_dir, seed=7).seed == 7
    assert detect.detect_once(detect.run_settings(rgb_dir)) == summary  # finished: re-read, not trained again
    # re-read only with the settings it was made with (where and how it reports may change); never silently stale
    assert detect.detect_once(detect.run_settings(rgb_dir, progress=True, loader_workers=0, device="cpu")) == summary
    iterations, lr = summary["iterations"], detect.run_settings(rgb_dir).lr
    with pytest.raises(ConfigError, match=f"made with iterations={iterations}, lr={lr}; this run asks for "
                                          f"iterations={iterations + 1}, lr=0.5: give it another --out"):
        detect.detect_once(detect.run_settings(rgb_dir, iterations=iterations + 1, lr=0.5))
    with pytest.raises(ConfigError, match="trunk_lr_mult"):  # --resume may train on for longer, not differently
        run_detect(detect.run_settings(rgb_dir, trunk_lr_mult=0.25, resume=True))
    assert json.loads((rgb_dir / "config.json").read_text())["settings"]["trunk_lr_mult"] != 0.25  # left as it was
    # the test split again, from the checkpoint: the run's own evaluation, so the trained weights were loaded
    again = detect.evaluate_run_on(rgb_dir, "depth_test")
    assert json.loads((again / "eval.json").read_text())["mAP"] == pytest.approx(summary["mAP"], abs=1e-6)
    val = detect.evaluate_run_on(rgb_dir, "depth_val")
    assert val == detect.split_eval_dir(rgb_dir, "depth_val")
    outputs = RoIOutputs.load(val / ROI_OUTPUTS)
    assert outputs.split == "depth_val" and outputs.frame_ids == [f.id for f in read_manifest(
        json.loads((rgb_dir / "config.json").read_text())["settings"]["manifest"]).split("depth_val")]
    stamp = (val / ROI_OUTPUTS).stat().st_mtime_ns
    assert detect.evaluate_run_on(rgb_dir, "depth_val") == val and (val / ROI_OUTPUTS).stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="not a finished detector run"):
        detect.evaluate_run_on(tmp_path, "depth_val")
    with pytest.raises(ConfigError, match="no labelled frames"):
        detect.evaluate_run_on(rgb_dir, "rgb_pretrain")


def test_resume_repeats_an_uninterrupted_run_exactly(synth_tiny, proposals, tmp_path, monkeypatch):
    saved = []

    def keep_copies(path, state):
        saved.append(state["step"])
        save_checkpoint(path.with_name(f"step{state['step']}.pt"), state)
        return save_checkpoint(path, state)

    monkeypatch.setattr(detect, "save_checkpoint", keep_copies)
    kw = {"modality": "rgb", "iterations": 6, "checkpoint_every": 3, "log_every": 1, "test_split": "depth_test"}
    run_detect(_settings(synth_tiny, tmp_path / "a", proposals, **kw))
    assert saved == [3, 6]
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "step3.pt", tmp_path / "b" / "checkpoint.pt")
    shutil.copy(tmp_path / "a" / "metrics.jsonl", tmp_path / "b" / "metrics.jsonl")
    resumed = run_detect(_settings(synth_tiny, tmp_path / "b", proposals, resume=True, **kw))
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    strip = [{k: v for k, v in m.items() if k not in ("time", "steps_per_s", "wait_fraction")}
             for m in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    again = [{k: v for k, v in m.items() if k not in ("time", "steps_per_s", "wait_fraction")}
             for m in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert strip == again and len(strip) == 6
    # a finished run is only re-evaluated (what `compare` does with a copied RGB detector)
    reevaluated = run_detect(_settings(synth_tiny, tmp_path / "b", proposals, resume=True, **kw))
    assert reevaluated["mAP"] == resumed["mAP"] and reevaluated["final"]["step"] == 6
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 6


def test_frames_without_proposals_are_named(synth_tiny, proposals, tmp_path):
    props = load_proposals(proposals)
    missing = sorted(f for f in props if "depth_train" in f)[:2]
    for f in missing:
        del props[f]
    save_proposals(tmp_path / "partial.npz", props)
    with pytest.raises(DataError, match=missing[0].replace(".", r"\.")):
        run_detect(_settings(synth_tiny, tmp_path / "run", tmp_path / "partial.npz", modality="hha"))


def test_cli_copy_rgb_init(rgb_run, synth_tiny, proposals, tmp_path, capsys):
    rgb_dir, _ = rgb_run
    rc = main(["detect", "--modality", "hha", "--manifest", str(synth_tiny), "--out", str(tmp_path / "cli"),
               "--init", "copy-rgb", "--trunk-checkpoint", str(rgb_dir / "checkpoint.pt"), "--proposals",
               str(proposals), "--profile", "tiny", "--iterations", "2", "--no-progress", "--loader-workers", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["init"] == "copy-rgb" and summary["test_split"] == "depth_test"
    ckpt = load_checkpoint(tmp_path / "cli" / "checkpoint.pt")
    assert ckpt["init"]["copied_tensors"] > 0 and ckpt["trunk"]["mean"] == list(modality("hha").mean)
    rc = main(["detect", "--modality", "hha", "--manifest", str(synth_tiny), "--out", str(tmp_path / "bad"),
               "--init", "transfer", "--profile", "tiny"])
    assert rc == 2 and "--trunk-checkpoint" in capsys.readouterr().err


def test_overfits_a_few_training_frames(synth_tiny, proposals, tmp_path):
    """Sanity: with enough steps the detector fits its own training frames (AP measured on them; ~5 s)."""
    summary = run_detect(_settings(
        synth_tiny, tmp_path, proposals, modality="rgb", iterations=200, fc_width=128, width=0.5, dropout=0.0,
        checkpoint_every=200, log_every=50, test_split="rgb_train", lr=0.01,
    ))
    assert summary["mAP"] > 0.5, summary
