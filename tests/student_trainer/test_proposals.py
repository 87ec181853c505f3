"""Proposals: file layouts (ours, MCG / selective search .mat), the built-in generator, recall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from shared.errors import ConfigError, DataError, ImageReadError
from shared.manifest import FrameRecord, Manifest, ManifestHeader, ObjectBox, read_manifest, write_manifest
from student_trainer.proposals import (
    METHODS,
    ProposalFileError,
    ProposalInputs,
    generate_proposals,
    load_proposals,
    proposal_recall,
    propose,
    read_proposal_file,
    save_proposals,
)
from student_trainer.proposals import generate as generate_module
from student_trainer.proposals import sources as sources_module
from tests.servers import cli, run_cli

needs_contrib = pytest.mark.skipif(not hasattr(cv2, "ximgproc"), reason="needs opencv-contrib (cv2.ximgproc)")

# ---------------------------------------------------------------- a hand-built frame with known rectangles

H, W = 96, 128
RECTS = {"red": ((10, 12, 40, 42), (200, 40, 40)), "blue": ((70, 20, 82, 32), (40, 60, 210)),
         "green": ((60, 55, 120, 85), (50, 190, 60))}  # (x1, y1, x2, y2) pixel edges, colour


def _scene() -> tuple[ProposalInputs, list[tuple[float, float, float, float]]]:
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(128, 4, (H, W, 3)), 0, 255).astype(np.uint8)
    depth = np.full((H, W, 3), 60, np.uint8)  # a flat "paired" image with the rectangles nearer
    for (x1, y1, x2, y2), colour in RECTS.values():
        rgb[y1:y2, x1:x2] = colour
        depth[y1:y2, x1:x2] = 180
    return ProposalInputs(rgb, (depth,)), [box for box, _ in RECTS.values()]


def _manifest(boxes) -> Manifest:
    frame = FrameRecord(id="hand.0", split="test", rgb="rgb.png",
                        objects=[ObjectBox(label="thing", box=b) for b in boxes])
    return Manifest(ManifestHeader(dataset="hand", classes=["thing"]), [frame], root=".")


@needs_contrib
@pytest.mark.parametrize("method", sorted(METHODS))
def test_generator_finds_known_rectangles_with_boxes_in_our_convention(method):
    inputs, truth = _scene()
    boxes, scores = propose(inputs, method, max_boxes=2000)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and 0 < len(boxes) <= 2000 and scores.shape == (len(boxes),)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all() and ((boxes[:, 3] - boxes[:, 1]) >= 1).all()
    assert (np.diff(scores) <= 0).all(), "boxes must come in descending score order"
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    recall = proposal_recall({"hand.0": boxes}, _manifest(truth), "test", top_k=(100, 2000))
    assert recall["recall@2000"] == 1.0 and recall["objects"] == 3
    # a rectangle of pixel columns 10..39 is [10, 40): a segment-based method finds it exactly
    if method != "edge_boxes":
        assert all(any(np.array_equal(b, t) for b in boxes) for t in np.array(truth, np.float32))


@needs_contrib
def test_generator_is_deterministic_and_respects_max_boxes():
    inputs, _ = _scene()
    first = propose(inputs, "hybrid", 2000)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1 if threads != 1 else 2)  # thread count and allocation history must not change a bit
    try:
        again = propose(ProposalInputs(inputs.rgb.copy(), tuple(p.copy() for p in inputs.paired)), "hybrid", 2000)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    few, _ = propose(inputs, "hybrid", 7)
    assert np.array_equal(few, first[0][:7])


@needs_contrib
def test_selective_search_on_a_downsampled_image_maps_boxes_back(monkeypatch):
    monkeypatch.setattr(sources_module, "SS_MAX_SIDE", 100)  # 96x128 -> 75x100, boxes scaled back
    inputs, truth = _scene()
    boxes, _ = sources_module.selective_search(inputs, 2000)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
    assert proposal_recall({"hand.0": boxes}, _manifest(truth), "test", iou=0.7)["recall@2000"] == 1.0


def test_worker_processes_do_not_import_torch():
    # spawned workers import only .generate / .methods: torchvision's import alone costs seconds per worker
    code = "import sys, student_trainer.proposals.generate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_unknown_method_and_bad_inputs_are_refused():
    inputs, _ = _scene()
    with pytest.raises(ValueError, match="unknown proposal method 'mcg'"):
        propose(inputs, "mcg")
    with pytest.raises(ValueError, match="paired image 0 must be uint8 of the RGB's shape"):
        ProposalInputs(inputs.rgb, (inputs.rgb[:10],))


# ---------------------------------------------------------------- the generator over a manifest


def _two_frame_manifest(synth_tiny, tmp_path):
    """One depth frame (HHA) and one flow frame of the tiny synthetic set, paths made absolute."""
    m = read_manifest(synth_tiny)
    frames = [m.split(s)[0] for s in ("depth_test", "flow_test")]
    fields = ("rgb", "depth", "raw_depth", "hha", "rgb_next", "flow")
    frames = [f.model_copy(update={k: str(m.path(getattr(f, k))) for k in fields if getattr(f, k)}) for f in frames]
    return write_manifest(tmp_path / "two" / "manifest.jsonl", m.header, frames), frames


@needs_contrib
def test_generate_is_parallel_deterministic_resumable_and_guarded(synth_tiny, tmp_path, monkeypatch):
    manifest, frames = _two_frame_manifest(synth_tiny, tmp_path)
    ids = [f.id for f in frames]
    one = generate_proposals(manifest, tmp_path / "one.npz", workers=1, progress=False)
    monkeypatch.setattr(generate_module, "_MIN_PARALLEL", 1)  # two frames, two processes
    two = generate_proposals(manifest, tmp_path / "two.npz", workers=2, progress=False)
    a, b = load_proposals(one), load_proposals(two)
    assert list(a) == ids and list(b) == ids
    assert all(np.array_equal(a[i], b[i]) for i in ids), "worker processes changed the boxes"
    for f in frames:
        h, w = f.intrinsics.height, f.intrinsics.width
        p = a[f.id]
        assert p.dtype == np.float32 and len(p) > 0 and (p[:, 2] <= w).all() and (p[:, 3] <= h).all()
    _, meta = read_proposal_file(one)
    assert meta["complete"] and meta["method"] == "hybrid" and meta["max_per_frame"] == 2000

    # resume: frames already in the cache are kept as they are, only the missing ones are computed
    save_proposals(one, {ids[0]: np.array([[1, 2, 3, 4]], np.float32)}, {ids[0]: np.zeros(1)},
                   meta={**meta, "complete": False})
    generate_proposals(manifest, one, workers=1, progress=False)
    resumed = load_proposals(one)
    assert resumed[ids[0]].tolist() == [[1, 2, 3, 4]] and np.array_equal(resumed[ids[1]], a[ids[1]])
    assert read_proposal_file(one)[1]["complete"]

    with pytest.raises(ConfigError, match=r"method='hybrid', not method='edge_boxes'"):
        generate_proposals(manifest, one, method="edge_boxes", progress=False)
    save_proposals(tmp_path / "foreign.npz", {ids[0]: a[ids[0]]})
    with pytest.raises(ConfigError, match="not written by generate_proposals"):
        generate_proposals(manifest, tmp_path / "foreign.npz", progress=False)
    with pytest.raises(ConfigError, match="no frames in splits"):
        generate_proposals(manifest, tmp_path / "x.npz", splits=["nope"], progress=False)


@needs_contrib
def test_proposals_command_fills_the_cache_detect_reads(synth_tiny, tmp_path):
    """`student-trainer proposals` writes, for every labelled frame, the cache `detect` looks for (same identity)."""
    manifest, frames = _two_frame_manifest(synth_tiny, tmp_path)
    proc = run_cli("student_trainer.cli", "proposals", "--manifest", str(manifest), "--method", "edge_boxes",
                   "--workers", "1", "--no-progress")
    cache = generate_module.default_cache_path(manifest, "edge_boxes")
    assert str(cache) in proc.stdout
    assert list(load_proposals(cache)) == [f.id for f in frames]
    before = cache.stat().st_mtime_ns
    generate_proposals(manifest, cache, method="edge_boxes", splits=["depth_test"], progress=False)
    assert cache.stat().st_mtime_ns == before, "detect's own call recomputed or rewrote a complete cache"
    bad = run_cli("student_trainer.cli", "proposals", "--manifest", str(tmp_path / "missing.jsonl"), check=False)
    assert bad.returncode != 0 and "missing.jsonl" in bad.stderr


@needs_contrib
def test_generators_running_at_once_on_one_cache_keep_every_frame(synth_tiny, tmp_path):
    """Two runs for different splits (detectors started together) end with the union, not the last writer's."""
    m = read_manifest(synth_tiny)
    cache = tmp_path / "shared.npz"
    runs = [cli("student_trainer.cli", "proposals", "--manifest", str(synth_tiny), "--out", str(cache),
                "--splits", split, "--method", "edge_boxes", "--workers", "1", "--no-progress")
            for split in ("depth_test", "flow_test")]
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    want = {f.id for f in m.split("depth_test", "flow_test")}
    assert set(load_proposals(cache)) == want


@needs_contrib
def test_a_failed_run_keeps_finished_frames_and_names_the_bad_file(synth_tiny, tmp_path):
    _, frames = _two_frame_manifest(synth_tiny, tmp_path)
    broken = frames[0].model_copy(update={"id": "synth.broken", "rgb": str(tmp_path / "gone.png")})
    manifest = write_manifest(tmp_path / "m" / "manifest.jsonl", read_manifest(synth_tiny).header,
                              [frames[0], broken])
    out = tmp_path / "p.npz"
    with pytest.raises(ImageReadError, match=r"gone\.png does not exist"):
        generate_proposals(manifest, out, workers=1, progress=False, checkpoint_s=0)
    kept, meta = read_proposal_file(out)
    assert list(kept) == [frames[0].id] and meta["complete"] is False


def test_recall_names_frames_without_proposals():
    _, truth = _scene()
    with pytest.raises(DataError, match=r"have no proposals, e.g. \['hand.0'\]"):
        proposal_recall({}, _manifest(truth), "test")
    half = np.array([[10, 12, 40, 42], [0, 0, 5, 5]], np.float32)
    r = proposal_recall({"hand.0": half}, _manifest(truth), "test", top_k=(1, 2))
    assert r["recall@1"] == pytest.approx(1 / 3) and r["mean_proposals"] == 2


# ---------------------------------------------------------------- our .npz layouts


def test_ragged_npz_round_trip_keeps_order_and_meta(tmp_path):
    boxes = {"nyud2.img_5001": np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32),
             "nyud2.img_5002": np.zeros((0, 4), np.float32), "synth.x:1": np.array([[1.5, 2, 3, 4.25]])}
    path = save_proposals(tmp_path / "p.npz", boxes, {k: np.arange(len(v))[::-1] for k, v in boxes.items()},
                          meta={"method": "mine"})
    loaded, meta = read_proposal_file(path)
    assert list(loaded) == list(boxes) and meta == {"method": "mine"}
    for k, v in boxes.items():
        assert loaded[k][0].dtype == np.float32 and np.array_equal(loaded[k][0], v)
    assert not list(tmp_path.glob(".*")), "the temp file must be renamed away"
    with np.load(path) as z:
        assert sorted(z.files) == ["boxes", "counts", "ids", "meta", "scores"] and z["counts"].tolist() == [2, 0, 1]


def test_per_frame_npz_layout_sorts_by_score_column(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, **{"a.1": np.array([[0, 0, 4, 4, 0.1], [1, 1, 5, 5, 0.9], [2, 2, 6, 6, 0.1]]),
                      "a.2": np.array([[0, 0, 8, 8]], np.int32)})
    out = load_proposals(path)
    assert out["a.1"].tolist() == [[1, 1, 5, 5], [0, 0, 4, 4], [2, 2, 6, 6]]  # ties keep the file's order
    assert out["a.2"].dtype == np.float32 and out["a.2"].tolist() == [[0, 0, 8, 8]]


def _ragged(path, **over):
    data = {"ids": np.array(["f.1", "f.2"]), "counts": np.array([1, 2]),
            "boxes": np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], np.float32)} | over
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


@pytest.mark.parametrize(("over", "message"), [
    ({"counts": np.array([1, 1])}, r"'boxes' has 3 rows but 'counts' adds up to 2"),
    ({"counts": None}, r"needs 'counts'"),
    ({"boxes": np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, np.nan, 3, 3]])}, r"frame 'f.2': row 1 is not finite"),
    ({"ids": np.array(["f.1", "f.1"])}, r"frame 'f.1': appears twice"),
    ({"ids": np.array(["f.1", "bad id"])}, r"id 'bad id' is not a valid frame id"),
    ({"boxes": np.zeros((3, 5))}, r"'boxes' must be a numeric \(N, 4\) array"),
    ({"scores": np.zeros(2)}, r"'scores' must be 3 finite numbers"),
    ({"extra": np.zeros(1)}, r"unexpected keys \['extra'\]"),
])
def test_bad_ragged_npz_names_file_and_frame(tmp_path, over, message):
    path = _ragged(tmp_path / "bad.npz", **over)
    with pytest.raises(ProposalFileError, match=message) as e:
        load_proposals(path)
    assert str(path) in str(e.value)


def test_bad_per_frame_npz_and_unreadable_files(tmp_path):
    np.savez(tmp_path / "shape.npz", **{"f.1": np.zeros((2, 3))})
    with pytest.raises(ProposalFileError, match=r"shape.npz: frame 'f.1': boxes must have shape \(K, 4\) or \(K, 5\)"):
        load_proposals(tmp_path / "shape.npz")
    np.savez(tmp_path / "pickle.npz", **{"f.1": np.array([None], dtype=object)})
    with pytest.raises(ProposalFileError, match=r"pickle\.npz: holds an array that needs pickle"):
        load_proposals(tmp_path / "pickle.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ProposalFileError, match=r"junk\.npz: not a readable \.npz"):
        load_proposals(tmp_path / "junk.npz")
    (tmp_path / "meta.npz").write_bytes(b"")
    np.savez(tmp_path / "meta.npz", meta=np.array("{not json"), **{"f.1": np.zeros((0, 4))})
    with pytest.raises(ProposalFileError, match="'meta' is not JSON"):
        load_proposals(tmp_path / "meta.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz does not exist"):
        load_proposals(tmp_path / "missing.npz")
    with pytest.raises(ProposalFileError, match=r"frame 'f.1': expected 2 finite scores, got 1"):
        save_proposals(tmp_path / "s.npz", {"f.1": np.zeros((2, 4))}, {"f.1": np.zeros(1)})


# ---------------------------------------------------------------- MATLAB layouts (Gupta et al.'s NYUD2 files)

# MATLAB [y1 x1 y2 x2], 1-based inclusive pixel indices -> ours [x1-1, y1-1, x2, y2], x2/y2 exclusive.
MAT_BOXES = np.array([[11, 21, 30, 60], [1, 1, 425, 560]], float)
OURS = [[20, 10, 60, 30], [0, 0, 560, 425]]


def _cell(items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def test_mcg_dataset_file_as_fast_rcnn_nyud2_reads_it(tmp_path):
    # Gupta's Fast R-CNN: sio.loadmat(f)['bboxes'].ravel()[i][:, (1, 0, 3, 2)] - 1 -> 0-based inclusive x1 y1 x2 y2
    path = tmp_path / "nyud2_mcg_boxes.mat"
    scipy.io.savemat(path, {"bboxes": _cell([MAT_BOXES, np.zeros((0, 4))]), "imnames": _cell(["img_5001", "img_5002"])})
    out = load_proposals(path, id_prefix="nyud2.")
    assert list(out) == ["nyud2.img_5001", "nyud2.img_5002"]
    assert out["nyud2.img_5001"].tolist() == OURS and out["nyud2.img_5002"].shape == (0, 4)
    fast_rcnn = scipy.io.loadmat(path)["bboxes"].ravel()[0][:, (1, 0, 3, 2)] - 1
    assert np.array_equal(out["nyud2.img_5001"][:, :2], fast_rcnn[:, :2])
    assert np.array_equal(out["nyud2.img_5001"][:, 2:], fast_rcnn[:, 2:] + 1)  # inclusive -> exclusive
    # selective search's Fast R-CNN files: 'boxes' + 'images' (a char matrix here), same box order
    scipy.io.savemat(tmp_path / "ss.mat", {"boxes": _cell([MAT_BOXES]), "images": np.array(["img_5001"])})
    assert load_proposals(tmp_path / "ss.mat")["img_5001"].tolist() == OURS


def test_mcg_per_image_files_candidates_struct_and_region_files(tmp_path):
    folder = tmp_path / "mcg"
    folder.mkdir()
    scores = np.array([[0.2], [0.8]])
    scipy.io.savemat(folder / "img_5001.mat", {"candidates": {"bboxes": MAT_BOXES, "scores": scores,
                                                              "superpixels": np.ones((4, 4)), "labels": _cell([1, 2])}})
    scipy.io.savemat(folder / "img_5002.mat", {"bboxes": MAT_BOXES[:1], "superpixels": np.ones((4, 4))})
    loaded, _ = read_proposal_file(folder, id_prefix="nyud2.")
    boxes, s = loaded["nyud2.img_5001"]
    assert boxes.tolist() == OURS[::-1] and s.tolist() == pytest.approx([0.8, 0.2])  # best score first
    assert loaded["nyud2.img_5002"][0].tolist() == OURS[:1] and loaded["nyud2.img_5002"][1] is None
    assert load_proposals(folder / "img_5002.mat")["img_5002"].tolist() == OURS[:1]


def test_bad_mat_files_name_file_and_frame(tmp_path):
    zero_based = tmp_path / "zero.mat"
    scipy.io.savemat(zero_based, {"bboxes": _cell([MAT_BOXES - 1]), "imnames": _cell(["img_5001"])})
    with pytest.raises(ProposalFileError, match=r"zero.mat: frame 'nyud2.img_5001': box values go down to 0"):
        load_proposals(zero_based, id_prefix="nyud2.")
    flipped = tmp_path / "flipped.mat"
    scipy.io.savemat(flipped, {"bboxes": _cell([MAT_BOXES[:, [2, 3, 0, 1]]]), "imnames": _cell(["img_5001"])})
    with pytest.raises(ProposalFileError, match=r"frame 'img_5001': row 0 .* y2 < y1 or x2 < x1"):
        load_proposals(flipped)
    uneven = tmp_path / "uneven.mat"
    scipy.io.savemat(uneven, {"bboxes": _cell([MAT_BOXES]), "imnames": _cell(["a", "b"])})
    with pytest.raises(ProposalFileError, match=r"uneven.mat: expected one entry per image .* 1 'bboxes', 2 'imnames'"):
        load_proposals(uneven)
    wide = tmp_path / "wide.mat"
    scipy.io.savemat(wide, {"bboxes": _cell([np.ones((2, 5))]), "imnames": _cell(["img_1"])})
    with pytest.raises(ProposalFileError, match=r"frame 'img_1': boxes must have shape \(K, 4\)"):
        load_proposals(wide)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"something": np.ones(3)})
    with pytest.raises(ProposalFileError, match=r"other.mat: no proposals found.*got \['something'\]"):
        load_proposals(other)
    v73 = tmp_path / "v73.mat"  # MATLAB's v7.3 header: version 0x0200, then HDF5
    v73.write_bytes(b"MATLAB 7.3 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
    with pytest.raises(ProposalFileError, match=r"v73.mat: is a MATLAB v7.3 \(HDF5\) file"):
        load_proposals(v73)


def test_meta_is_plain_json(tmp_path):
    path = save_proposals(tmp_path / "m.npz", {"f.1": np.zeros((1, 4))}, meta={"complete": True})
    with np.load(path) as z:
        assert json.loads(str(z["meta"])) == {"complete": True}
