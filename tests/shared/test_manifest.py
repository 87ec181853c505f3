import json

import pytest

from shared.camera import NYUD2_KINECT
from shared.errors import FrameNotFoundError, ManifestError
from shared.manifest import FrameRecord, ManifestHeader, ObjectBox, read_manifest, write_manifest

HEADER = ManifestHeader(dataset="demo", classes=["chair", "table"])


def _frames():
    return [
        FrameRecord(id="demo.0001", split="train", rgb="rgb/0001.png", depth="depth/0001.png",
                    intrinsics=NYUD2_KINECT, objects=[ObjectBox(label="chair", box=(1, 2, 30, 40))]),
        FrameRecord(id="demo.0002", split="test", rgb="rgb/0002.png", rgb_next="rgb/0003.png",
                    flow_gt="flow_gt/0002.flo", flow_occlusion="flow_occlusion/0002.png"),
    ]


def test_round_trip(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", HEADER, _frames())
    m = read_manifest(path)
    assert [f.id for f in m] == ["demo.0001", "demo.0002"]
    assert m["demo.0001"].objects[0].box == (1, 2, 30, 40)
    assert m["demo.0001"].labeled and not m["demo.0002"].labeled
    assert m.splits() == {"train": 1, "test": 1}
    assert m.path("rgb/0001.png") == tmp_path / "rgb/0001.png"
    assert m.classes == ["chair", "table"]
    assert m["demo.0002"].flow_gt == "flow_gt/0002.flo" and m["demo.0001"].flow_occlusion is None
    with pytest.raises(FrameNotFoundError, match=r"demo\.9999"):
        m["demo.9999"]


def _write_lines(tmp_path, lines):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def _header():
    return HEADER.model_dump_json()


def _frame(**kw):
    d = {"id": "demo.0001", "split": "train", "rgb": "a.png"}
    d.update(kw)
    return json.dumps(d)


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (_frame(id="../../etc/passwd"), "id", "invalid frame id"),
        (_frame(split="Bad Split"), "split", "pattern"),
        (_frame(rgb=""), "rgb", "at least 1"),
        (_frame(objects=[{"label": "chair", "box": [10, 10, 5, 20]}]), "objects.0.box", "x2 > x1"),
        (_frame(depth="d.png"), None, "intrinsics"),
        (_frame(flow_occlusion="o.png"), None, "flow_occlusion is given without flow_gt"),
        (_frame(colour="x.png"), "colour", "Extra inputs"),
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, line, field, words):
    p = _write_lines(tmp_path, [_header(), _frame(id="demo.0000"), line])
    with pytest.raises(ManifestError) as e:
        read_manifest(p)
    msg = str(e.value)
    assert f"{p}:3" in msg and words in msg
    if field:
        assert e.value.field == field and repr(field) in msg


def test_missing_header(tmp_path):
    p = _write_lines(tmp_path, [_frame()])
    with pytest.raises(ManifestError, match=r":1: field 'format'"):
        read_manifest(p)


def test_duplicates_and_unknown_labels(tmp_path):
    with pytest.raises(ManifestError, match=r"duplicate frame id .demo\.0001."):
        read_manifest(_write_lines(tmp_path, [_header(), _frame(), _frame()]))
    bad = _frame(objects=[{"label": "sofa", "box": [0, 0, 5, 5]}])
    with pytest.raises(ManifestError, match="'sofa' not in classes"):
        read_manifest(_write_lines(tmp_path, [_header(), bad]))


def test_missing_file_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ManifestError, match="empty manifest"):
        read_manifest(tmp_path / "empty.jsonl")


def test_write_is_atomic_no_temp_left(tmp_path):
    write_manifest(tmp_path / "m.jsonl", HEADER, _frames())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
