"""The ImageNet-like teacher's renders: pretrain-* profiles, RGB-only splits, the shape x look label space."""

import collections

import pytest

from shared.manifest import read_manifest
from xmodal_data.cli import main as data_main
from xmodal_data.synth import SynthConfig, generate_synth, synthesize_frame
from xmodal_data.synth.catalogue import LOOK_NAMES, SHAPE_CLASSES, look_label

PRETRAIN = SynthConfig.profile("pretrain-tiny")


def test_label_space_is_shape_times_look():
    names = PRETRAIN.label_names()
    assert len(names) == len(SHAPE_CLASSES) ** 2 == len(set(names))
    assert names[0] == look_label(SHAPE_CLASSES[0], SHAPE_CLASSES[0]) == f"{SHAPE_CLASSES[0]}/{LOOK_NAMES['sphere']}"
    assert SynthConfig.profile("quick").label_names() == list(SHAPE_CLASSES)  # detection profiles unchanged


def test_pretrain_frames_are_rgb_only_and_labelled_by_look():
    frame = synthesize_frame(PRETRAIN, "rgb_pretrain", 0)
    assert frame.raw_depth is None and frame.rgb_next is None and frame.objects
    by_object = [(o.label, o.look) for o in frame.scene.objects if o.label is not None]
    for box in frame.objects:
        shape, look_name = box.label.split("/")
        assert shape in SHAPE_CLASSES and look_name in LOOK_NAMES.values()
        assert any(look_label(s, k) == box.label for s, k in by_object)


def test_looks_are_independent_of_shape():
    """With a shared-appearance probability of 5/6 each of the 6 looks is equally likely, whatever the shape."""
    quick = SynthConfig.profile("pretrain-quick")
    looks = collections.Counter()
    own = 0
    small = quick.model_copy(update={"height": 24, "width": 32})
    for i in range(60):
        for o in synthesize_frame(small, "rgb_pretrain", i).scene.objects:
            if o.label is not None:
                looks[o.look] += 1
                own += o.look == o.label
    total = sum(looks.values())
    assert total > 150 and len(looks) == 6
    assert own / total < 0.3  # the detection splits keep their class's own look 85 % of the time


def test_detection_frames_do_not_depend_on_the_new_fields():
    """The label space only names objects: a frame of a detection split renders the same pixels and boxes."""
    quick = SynthConfig.profile("tiny")
    a = synthesize_frame(quick, "depth_test", 1)
    b = synthesize_frame(quick.model_copy(update={"label_space": "shape_look"}), "depth_test", 1)
    assert (a.rgb == b.rgb).all() and [o.box for o in a.objects] == [o.box for o in b.objects]
    assert all("/" in o.label for o in b.objects) and all("/" not in o.label for o in a.objects)


def test_cli_writes_a_pretrain_dataset(tmp_path):
    out = tmp_path / "pre"
    assert data_main(["synth", "--profile", "pretrain-tiny", "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    m = read_manifest(out / "manifest.jsonl")
    assert m.classes == PRETRAIN.label_names()
    assert m.splits() == {"rgb_pretrain": 12, "rgb_pretrain_test": 4}
    assert all(f.depth is None and f.rgb_next is None and f.labeled for f in m)
    assert not (out / "depth").exists() and (out / "contact_sheet.png").is_file()


def test_old_folder_without_label_space_resumes(tmp_path):
    """A folder written before the label space was a setting resumes (its config reads as the shape space)."""
    import json

    generate_synth(tmp_path, SynthConfig.profile("tiny"), workers=1, progress=False)
    path = tmp_path / "synth_config.json"
    stored = json.loads(path.read_text())
    del stored["label_space"]
    path.write_text(json.dumps(stored))
    generate_synth(tmp_path, SynthConfig.profile("tiny"), workers=1, progress=False)
    with pytest.raises(ValueError, match="label_space"):
        generate_synth(tmp_path, SynthConfig.profile("tiny").model_copy(update={"label_space": "shape_look"}),
                       workers=1, progress=False)
