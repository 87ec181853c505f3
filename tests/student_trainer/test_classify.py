"""``student-trainer classify``: the ImageNet-like teacher on crops of the pretraining renders."""

import json

import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.nets.teachers import load_teacher
from student_trainer.classify import crop_object, run_classify
from student_trainer.classify_settings import ClassifySettings
from student_trainer.cli import main as trainer_main
from student_trainer.detect import build_detect
from student_trainer.detect_settings import DetectSettings
from xmodal_data.synth import SynthConfig, generate_synth

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    return generate_synth(out, SynthConfig.profile("pretrain-tiny"), workers=1, progress=False)


def test_crop_is_centred_on_the_box_with_its_context():
    img = np.zeros((60, 80, 3), np.uint8)
    img[20:30, 40:60] = 200  # a 20 x 10 box: x 40..60, y 20..30
    crop = crop_object(img, (40, 20, 60, 30), size=40, context=2.0)  # side 40 px around (50, 25): 1:1 scale
    assert crop.shape == (40, 40, 3)
    assert (crop[15:25, 10:30] == 200).all() and (crop[:14] == 0).all() and (crop[:, :9] == 0).all()
    half = crop_object(img, (40, 20, 60, 30), size=20, context=2.0)  # the same window at half size
    assert (half[8:12, 5:15] == 200).all() and half[0, 0, 0] == 0


def test_crop_outside_the_image_repeats_the_border():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, :2] = 255
    crop = crop_object(img, (0, 5, 4, 9), size=16, context=4.0)  # reaches 6 px left of the image
    assert (crop[:, :4] == 255).all()


def test_classify_writes_a_teacher_and_a_detector_init(pretrain, tmp_path):
    out = tmp_path / "cls"
    s = ClassifySettings(manifest=pretrain, out=out, profile="tiny", progress=False)
    summary = run_classify(s)
    assert summary["classes"] == 36 and summary["train_crops"] > 0 and summary["test_crops"] > 0
    assert 0 <= summary["accuracy"] <= 1 and json.loads((out / "summary.json").read_text()) == summary
    ev = json.loads((out / "eval.json").read_text())
    assert ev["split"] == "rgb_pretrain_test" and all("/" in c for c in ev["per_class"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == s.iterations and all(np.isfinite(r["loss"]) for r in rows)
    teacher = load_teacher("checkpoint", str(out / "checkpoint.pt"))  # the ImageNet-like teacher as it is
    assert teacher.identity.arch == "alexnet-small"
    with torch.no_grad():
        assert teacher.trunk(torch.zeros(1, 3, 64, 80)).shape[1] == teacher.identity.out_channels
    # the RGB detector (the adapted teacher) starts from it, on another dataset and label space
    det = build_detect(DetectSettings(modality="rgb", init="copy-rgb", trunk_checkpoint=out / "checkpoint.pt",
                                      manifest=_detect_manifest(tmp_path), out=tmp_path / "det", profile="tiny"))
    assert det.init["copied_tensors"] > 0


def _detect_manifest(tmp_path):
    return generate_synth(tmp_path / "det-data", SynthConfig.profile("tiny"), workers=1, progress=False)


def test_resume_continues_and_refuses_other_classes(pretrain, tmp_path):
    out = tmp_path / "cls"
    run_classify(ClassifySettings(manifest=pretrain, out=out, profile="tiny", iterations=10, progress=False))
    run_classify(ClassifySettings(manifest=pretrain, out=out, profile="tiny", iterations=20, resume=True,
                                  progress=False))
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    ckpt["classes"] = ["other"]
    torch.save(ckpt, out / "checkpoint.pt")
    with pytest.raises(ConfigError, match="other classes"):
        run_classify(ClassifySettings(manifest=pretrain, out=out, profile="tiny", resume=True, progress=False))
    with pytest.raises(ConfigError, match=r"holds a crop classifier run made with lr=.*; this run asks for lr=0\.5"):
        run_classify(ClassifySettings(manifest=pretrain, out=out, profile="tiny", iterations=20, lr=0.5,
                                      resume=True, progress=False))


def test_bad_settings_fail_with_one_line(pretrain, tmp_path, capsys):
    assert trainer_main(["classify", "--manifest", str(pretrain), "--out", str(tmp_path / "x"),
                         "--test-split", "rgb_pretrain"]) == 2
    assert "also a training split" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no labelled object"):
        run_classify(ClassifySettings(manifest=pretrain, out=tmp_path / "y", profile="tiny", test_split="depth_test",
                                      progress=False))
