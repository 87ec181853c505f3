"""The recipes' parts: settings and profiles, the detectors' shared settings, the ImageNet AlexNet trunk, the
transfer frame size, MCG proposals, the merged tables, shared runs, and the fail-fast weights check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from shared.camera import NYUD2_KINECT
from shared.errors import DataError, GeometryError
from shared.manifest import FrameRecord, ManifestHeader, ObjectBox, write_manifest
from tests.servers import REPO
from tests.xmodal_pipeline.recipe_fixtures import write_mcg
from xmodal_data.importers.nyud2 import GUPTA_CROP
from xmodal_pipeline.procs import ChildProcesses
from xmodal_pipeline.recipes.cli import main
from xmodal_pipeline.recipes.geometry import common_frame_size, png_size, transfer_input_size
from xmodal_pipeline.recipes.imagenet import torchvision_alexnet_trunk, write_alexnet_checkpoint
from xmodal_pipeline.recipes.nyud2 import Nyud2Recipe, import_mcg
from xmodal_pipeline.recipes.report import mean_table, merged_table, table_markdown
from xmodal_pipeline.recipes.settings import JhmdbRecipeSettings, Nyud2RecipeSettings

NYUD2_PATHS = {"nyud2_mat": "l.mat", "nyud2_meta": "meta", "nyud2_raw": "raw"}
JHMDB_PATHS = {"ucf101": "ucf", "ucf101_list": "trainlist01.txt", "jhmdb": "jhmdb"}
HEAVY = ["torch", "torchvision", "cv2", "matplotlib", "zarr"]


@pytest.mark.parametrize("command", ["nyud2", "jhmdb"])
def test_help_names_every_path_flag_and_imports_nothing_heavy(command):
    code = (
        "import contextlib, io, json, sys\n"
        "from xmodal_pipeline.recipes.cli import main\n"
        "out = io.StringIO()\n"
        f"with contextlib.suppress(SystemExit), contextlib.redirect_stdout(out):\n"
        f"    main([{command!r}, '--help'])\n"
        f"print(json.dumps([out.getvalue(), [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    text, heavy = json.loads(run.stdout.strip().splitlines()[-1])
    assert heavy == []
    flags = {"nyud2": ["--nyud2-mat", "--nyud2-meta", "--nyud2-raw", "--mcg"],
             "jhmdb": ["--ucf101", "--ucf101-list", "--jhmdb", "--jhmdb-splits"]}[command]
    for flag in [*flags, "--profile", "--weights", "--out", "--seeds", "--teachers"]:
        assert flag in text
    assert "paper 40000, ci 30" in text  # the profile defaults are shown


def test_profiles_give_the_papers_schedules_and_tiny_ones(monkeypatch):
    for var in ("PROFILE", "OUT", "SHORT_SIDE", "LOADER_WORKERS"):
        monkeypatch.delenv(f"XMODAL_RECIPE_NYUD2_{var}", raising=False)
        monkeypatch.delenv(f"XMODAL_RECIPE_JHMDB_{var}", raising=False)
    paper = Nyud2RecipeSettings(**NYUD2_PATHS)
    assert (paper.profile, paper.transfer_iterations, paper.transfer_batch_size, paper.detector_iterations,
            paper.short_side, paper.out) == ("paper", 20000, 128, 40000, 688, Path("runs/recipe-nyud2"))
    assert paper.teachers == ["alexnet", "vgg16"] and paper.weights == "imagenet" and paper.nyud2_crop
    assert paper.loader_workers is None  # every core but two, decided where the recipe runs
    ci = Nyud2RecipeSettings(profile="ci", detector_iterations=7, **NYUD2_PATHS)
    assert (ci.transfer_iterations, ci.detector_iterations, ci.short_side, ci.loader_workers, ci.out) == (
        40, 7, 128, 0, Path("runs/recipe-nyud2-ci"))  # given explicitly: wins over the profile
    assert JhmdbRecipeSettings(**JHMDB_PATHS).short_side == 600
    monkeypatch.setenv("XMODAL_RECIPE_JHMDB_PROFILE", "ci")
    monkeypatch.setenv("XMODAL_RECIPE_JHMDB_TEACHERS", "vgg16")
    monkeypatch.setenv("XMODAL_RECIPE_JHMDB_JHMDB_SPLITS", "2,1,2")
    env = JhmdbRecipeSettings(**JHMDB_PATHS)
    assert (env.profile, env.transfer_iterations, env.teachers, env.jhmdb_splits) == ("ci", 40, ["vgg16"], [2, 1])
    with pytest.raises(ValueError, match="among 1, 2 and 3"):
        JhmdbRecipeSettings(jhmdb_splits=[4], **JHMDB_PATHS)
    with pytest.raises(ValueError, match="transfer-input-size is H W"):
        JhmdbRecipeSettings(transfer_input_size=[240], **JHMDB_PATHS)


def test_readme_lists_the_recipe_env_prefixes_and_commands():
    readme = (REPO / "README.md").read_text()
    for cls in (Nyud2RecipeSettings, JhmdbRecipeSettings):
        assert f"`{cls.model_config['env_prefix']}`" in readme
    assert "xmodal-recipe nyud2" in readme and "xmodal-recipe jhmdb" in readme
    assert 'xmodal-recipe = "xmodal_pipeline.recipes.cli:main"' in (REPO / "pyproject.toml").read_text()


def test_detector_settings_travel_as_env_vars_that_override_the_profile(tmp_path, monkeypatch):
    from student_trainer.detect_settings import DetectSettings

    s = Nyud2RecipeSettings(profile="ci", out=tmp_path, detector_iterations=11, **NYUD2_PATHS)
    with ChildProcesses(tmp_path / "logs") as procs:
        recipe = Nyud2Recipe(s, procs)
        env = recipe.detector_env(recipe.evaluations()[1])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    d = DetectSettings(modality="hha", manifest="m.jsonl", out=tmp_path, profile="tiny")  # as compare builds it
    assert (d.default_train_splits(), d.default_test_split(), d.trunk, d.iterations, d.short_side,
            d.loader_workers) == (["train", "val"], "test", "alexnet", 11, 128, 0)


def test_torchvision_alexnet_as_our_trunk(tmp_path):
    from shared.nets.teachers import load_teacher

    torch.manual_seed(0)
    x = torch.randn(2, 3, 120, 160)
    ours, theirs = torchvision_alexnet_trunk("random", seed=3), load_teacher("alexnet", "random", seed=3).trunk
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    path = write_alexnet_checkpoint(tmp_path / "alexnet.pt", "random", seed=3)
    back = load_teacher("checkpoint", str(path))  # the trunk checkpoint detectors copy from
    assert back.identity.arch == "alexnet-torchvision" and back.identity.mean == (0.485, 0.456, 0.406)
    with torch.no_grad():
        assert torch.equal(back.trunk(x), theirs(x))


def test_transfer_input_size_lets_the_trainers_search_succeed():
    from shared.nets.geometry import feature_size
    from shared.nets.trunks import trunk_spec
    from student_trainer.student import student_spec_for

    with torch.device("meta"):  # geometry only
        teachers = {arch: torchvision.models.get_model(arch).features for arch in ("alexnet", "vgg16")}
    assert transfer_input_size((480, 640), ["alexnet", "vgg16"]) == (480, 640)  # NYUD2 keeps its size
    for native in [(240, 320), (120, 160)]:
        size = transfer_input_size(native, ["alexnet", "vgg16"])
        assert size != native and max(abs(a / b - 1) for a, b in zip(size, native, strict=True)) < 0.1
        for features in teachers.values():
            student_spec_for(trunk_spec("alexnet"), size, feature_size(features, size))  # no GeometryError
        with pytest.raises(GeometryError, match="no conv1 padding"):  # why the size moves
            student_spec_for(trunk_spec("alexnet"), native, feature_size(teachers["alexnet"], native))


def test_png_sizes(tmp_path):
    from shared.imageio import write_image

    for i, hw in enumerate([(24, 32), (24, 32), (20, 40)]):
        write_image(tmp_path / f"{i}.png", np.zeros((*hw, 3), np.uint8))
    assert png_size(tmp_path / "2.png") == (20, 40)
    assert common_frame_size(sorted(tmp_path.glob("*.png"))) == (24, 32)
    (tmp_path / "x.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(DataError, match=r"x\.png is not a PNG"):
        png_size(tmp_path / "x.png")


def _labelled_manifest(tmp_path: Path, n: int = 3) -> tuple[Path, list[list[tuple[int, int, int, int]]]]:
    camera = NYUD2_KINECT.crop(**GUPTA_CROP)
    gt = [[(100 + 10 * i, 120, 220, 260)] for i in range(n)]  # full-frame coordinates, as the objects were placed
    frames = [FrameRecord(id=f"nyud2.img_{5001 + i}", split="train", rgb=f"rgb/{i}.png", intrinsics=camera,
                          objects=[ObjectBox(label="bed", box=gt[i][0])]) for i in range(n)]
    path = write_manifest(tmp_path / "manifest.jsonl", ManifestHeader(dataset="nyud2", classes=["bed"]), frames)
    return path, gt


def test_mcg_proposals_become_the_detectors_npz(tmp_path):
    from student_trainer.proposals import load_proposals

    manifest, gt = _labelled_manifest(tmp_path)
    names = [f"img_{5001 + i}" for i in range(3)]
    mcg = write_mcg(tmp_path / "nyud2_mcg_boxes.mat", names, gt, crop=True)
    got = load_proposals(import_mcg(mcg, manifest, tmp_path / "proposals_mcg.npz"))
    assert list(got) == [f"nyud2.{n}" for n in names]
    dx, dy = GUPTA_CROP["left"], GUPTA_CROP["top"]
    assert got["nyud2.img_5002"][0].tolist() == [110 - dx, 120 - dy, 220 - dx, 260 - dy]  # MATLAB [y1 x1 y2 x2]

    short = write_mcg(tmp_path / "short.mat", names[:2], gt[:2], crop=True)
    with pytest.raises(DataError, match=r"short\.mat has no proposals for 1 of the 3 labelled frames .*img_5003"):
        import_mcg(short, manifest, tmp_path / "p.npz")
    uncropped = write_mcg(tmp_path / "full.mat", names, gt, crop=False, seed=1)
    with pytest.raises(DataError, match=r"full\.mat: proposals of nyud2\.img_5001 reach x=6\d\d.* 560x425.*crop"):
        import_mcg(uncropped, manifest, tmp_path / "p.npz")
    assert not (tmp_path / "p.npz").exists()


def _compare(teacher_shift: float, classes=("bed", "chair")) -> dict:
    def row(label, maps):
        runs = [{"mAP": float(np.mean(m)), "ap": dict(zip(classes, m, strict=True))} for m in maps]
        mean = [r["mAP"] for r in runs]
        return {"label": label, "mAP": {"mean": float(np.mean(mean)), "std": 0.0, "n": len(mean)}, "runs": runs}

    keys = ["no-init", "copy-rgb", "transfer", "no-init-frozen", "copy-rgb-frozen", "transfer-frozen", "rgb",
            "fusion"]
    rows = {k: row(k, [[0.1 * i + teacher_shift * (k.startswith(("transfer", "fusion"))), 0.2]])
            for i, k in enumerate(keys)}
    return {"modality": "hha", "test_split": "val", "seeds": [0], "profile": "tiny", "rows": rows}


def test_merged_and_mean_tables():
    table = merged_table({"alexnet": _compare(0.0), "vgg16": _compare(0.05)}, {"alexnet": "AlexNet",
                         "vgg16": "VGG16"}, "hha", "imagenet", "paper", "split1")
    assert list(table["rows"]) == ["no-init", "copy-rgb", "transfer-alexnet", "transfer-vgg16", "no-init-frozen",
                                   "copy-rgb-frozen", "transfer-alexnet-frozen", "transfer-vgg16-frozen", "rgb",
                                   "fusion-alexnet", "fusion-vgg16"]
    assert table["rows"]["transfer-vgg16"]["mAP"]["mean"] == pytest.approx((0.2 + 0.05 + 0.2) / 2)
    text = table_markdown(table)
    assert "HHA: supervision transfer from ImageNet VGG16 |" in text and "profile paper" in text
    assert "detection on `split1 val`" in text
    assert "RGB + HHA (late fusion; HHA from VGG16)" in text
    other = merged_table({"alexnet": _compare(0.1), "vgg16": _compare(0.15)}, {"alexnet": "AlexNet",
                         "vgg16": "VGG16"}, "hha", "imagenet", "paper", "split2")
    mean = mean_table({"split1": table, "split2": other})
    m = mean["rows"]["transfer-alexnet"]
    assert m["mAP"]["n"] == 2 and m["mAP"]["mean"] == pytest.approx(np.mean([(0.2 + 0.2) / 2, (0.3 + 0.2) / 2]))
    assert [r["ap"]["bed"] for r in m["runs"]] == pytest.approx([0.2, 0.3])
    assert "detection on `val, mean over split1, split2`" in table_markdown(mean)
    row = r"\| HHA: no init \(random trunk\) \| 0\.0 \| 20\.0 \| \*\*10\.0\*\* ± 0\.0 \|"
    assert re.search(row, table_markdown(mean))


def test_teacher_free_runs_are_linked_not_trained_again(tmp_path):
    s = Nyud2RecipeSettings(profile="ci", out=tmp_path, seeds=[0, 1], **NYUD2_PATHS)
    first, second = tmp_path / "first", tmp_path / "second"
    for name in ["rgb", "no-init-seed0", "no-init-seed1", "copy-rgb-frozen-seed1", "transfer-seed0"]:
        (first / name).mkdir(parents=True)
        (first / name / "summary.json").write_text("{}")
    (first / "copy-rgb-seed0").mkdir()  # unfinished: not linked, the second comparison trains it
    with ChildProcesses(tmp_path / "logs") as procs:
        Nyud2Recipe(s, procs)._share_teacher_free_runs(first, second)
    linked = sorted(p.name for p in second.iterdir())
    assert linked == ["copy-rgb-frozen-seed1", "no-init-seed0", "no-init-seed1", "rgb"]
    assert all((second / n).is_symlink() and (second / n / "summary.json").is_file() for n in linked)


def _offline_for(*names):
    """torchvision's weight download: offline for URLs naming ``names``, random weights for the others."""
    def load(url, *args, **kwargs):
        if any(n in url for n in names):
            raise urllib.error.URLError("Name or service not known")
        return torchvision.models.get_model("alexnet" if "alexnet" in url else "vgg16").state_dict()
    return load


@pytest.mark.parametrize(("offline", "named"), [("vgg16", "vgg16-397923af.pth"), ("alexnet", "alexnet-owt")])
def test_missing_imagenet_weights_fail_before_any_import(offline, named, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline_for(offline))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline_for(offline), raising=False)
    args = ["--nyud2-mat", "l.mat", "--nyud2-meta", "meta", "--nyud2-raw", "raw"]
    assert main(["nyud2", "--profile", "ci", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("xmodal-recipe nyud2: error: could not load torchvision's")
    assert named in err and "place it at" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "report" / "timings.json").exists()


def test_import_options_reach_the_importers(tmp_path):
    from xmodal_pipeline.recipes.jhmdb import JhmdbRecipe

    calls: list[tuple[str, list[str]]] = []
    with ChildProcesses(tmp_path / "logs") as procs:
        procs.run = lambda name, module, args, env=None: calls.append((name, [str(a) for a in args]))
        Nyud2Recipe(Nyud2RecipeSettings(out=tmp_path, allow_missing_scenes=True, max_sync_gap_s=0.1, every_s=0.5,
                                        workers=3, **NYUD2_PATHS), procs).import_raw()
        JhmdbRecipe(JhmdbRecipeSettings(out=tmp_path, ucf101_skip_bad=True, frames_per_video=2, **JHMDB_PATHS),
                    procs).import_ucf101()
    (raw_name, raw), (ucf_name, ucf) = calls
    assert raw_name == "import-raw" and raw[0] == "nyud2-raw"
    assert {"--allow-missing-scenes", "--max-sync-gap-s", "0.1", "--every-s", "0.5", "--workers", "3"} <= set(raw)
    assert raw[raw.index("--splits") + 1: raw.index("--splits") + 3] == ["train", "val"]  # never test scenes
    assert ucf_name == "import-ucf101" and "--skip-bad" in ucf and ucf[ucf.index("--frames-per-video") + 1] == "2"


def test_compare_reevaluates_an_rgb_detector_started_from_imagenet_alexnet(synth_tiny, tmp_path):
    """``compare``'s "RGB alone" row rebuilds the RGB run with the run's own init (here copy-rgb from torchvision's
    AlexNet layout) before loading its checkpoint; rebuilt as a random default trunk it could not load it."""
    from student_trainer.compare import _rgb_alone
    from student_trainer.detect import run_detect
    from student_trainer.detect_settings import CompareSettings, DetectSettings

    init = write_alexnet_checkpoint(tmp_path / "alexnet.pt", "random", seed=1)
    common = {"manifest": synth_tiny, "profile": "tiny", "progress": False, "device": "cpu"}
    first = run_detect(DetectSettings(modality="rgb", init="copy-rgb", trunk_checkpoint=init, out=tmp_path / "rgb",
                                      iterations=2, loader_workers=0, **common))
    again = _rgb_alone(CompareSettings(modality="hha", out=tmp_path / "compare", rgb_run=tmp_path / "rgb",
                                       transfer=init, **common), "depth_test")
    summary = json.loads((again / "summary.json").read_text())
    assert summary["init"] == "copy-rgb" and summary["mAP"] == pytest.approx(first["mAP"])
