"""The demo's per-profile folders and the stage timings (shared with the recipes), which a rerun that skips
everything must not overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ConfigError
from xmodal_pipeline import stages as stages_module
from xmodal_pipeline.demo import Demo, DemoSettings
from xmodal_pipeline.procs import error_line
from xmodal_pipeline.report import goals, goals_markdown, merge_comparisons, timings_markdown
from xmodal_pipeline.stages import StageTimer, read_timings


@pytest.mark.parametrize(("profile", "out"), [("tiny", "runs/demo-tiny"), ("quick", "runs/demo"),
                                              ("paper", "runs/demo-paper"), ("full", "runs/demo-full")])
def test_each_profile_has_its_own_default_folder(profile, out, monkeypatch):
    monkeypatch.delenv("XMODAL_DEMO_OUT", raising=False)
    assert DemoSettings(profile=profile).out == Path(out)
    assert DemoSettings(profile=profile, out="elsewhere").out == Path("elsewhere")  # --out / OUT= wins


def test_paper_profile_is_the_full_protocol_and_flags_override_it(monkeypatch):
    for name in ("SEEDS", "TEACHERS", "TRANSFER_ITERATIONS", "FLOW_CEILING", "DETECTOR_ITERATIONS"):
        monkeypatch.delenv(f"XMODAL_DEMO_{name}", raising=False)
    paper = DemoSettings(profile="paper")
    assert len(paper.seeds) >= 3 and set(paper.teachers) == {"adapted", "imagenet"} and paper.flow_ceiling
    assert paper.rgb_init == "imagenet" and paper.uses_pretraining and paper.transfer_iterations >= 1600
    assert paper.detector_iterations == 1000 and DemoSettings(profile="quick").detector_iterations is None
    names = [v.name for v in Demo(paper, procs=None).variants]  # type: ignore[arg-type]
    assert names == ["hha", "flow", "flow-gt"]
    mine = DemoSettings(profile="paper", seeds=[4], teachers=["adapted"], rgb_init="random", flow_ceiling=False)
    assert (mine.seeds, mine.teachers, mine.uses_pretraining) == ([4], ["adapted"], False)
    assert [v.name for v in Demo(mine, procs=None).variants] == ["hha", "flow"]  # type: ignore[arg-type]
    monkeypatch.setenv("XMODAL_DEMO_TRANSFER_ITERATIONS", "123")
    monkeypatch.setenv("XMODAL_DEMO_DETECTOR_ITERATIONS", "77")
    assert (DemoSettings(profile="paper").transfer_iterations, DemoSettings(profile="paper").detector_iterations) == (
        123, 77)
    with pytest.raises(ValueError):
        DemoSettings(profile="paper", teachers=["vgg"])


def test_a_rerun_in_the_same_folder_must_ask_for_the_same_results(tmp_path):
    def check(**kw):
        Demo(DemoSettings(profile="tiny", out=tmp_path, **kw), procs=None).check_folder()  # type: ignore[arg-type]

    check()
    assert json.loads((tmp_path / "import.json").read_text())["settings"]["detector_iterations"] == 40
    check(device="cpu", seeds=[0, 1])  # where it runs and how many seeds: may change
    with pytest.raises(ConfigError, match="other settings \\(differ in: detector_iterations"):
        check(detector_iterations=80)


def _compare(rows: dict[str, float], frozen: dict[str, float]) -> dict:
    def row(v: float) -> dict:
        return {"label": "x", "mAP": {"mean": v / 100, "std": 0.0, "n": 1}, "runs": [{"ap": {"a": v / 100},
                                                                                      "weight": 0.7}]}

    out = {k: row(v) for k, v in rows.items()} | {f"{k}-frozen": row(v) for k, v in frozen.items()}
    return {"modality": "hha", "test_split": "depth_test", "val_split": "depth_val", "seeds": [0],
            "profile": "quick", "rows": out}


def test_merged_table_and_goals():
    adapted = _compare({"no-init": 50, "copy-rgb": 58, "transfer": 64, "control": 51.5, "rgb": 70, "fusion": 72,
                        "fusion-val": 73}, {"no-init": 10, "copy-rgb": 20, "transfer": 40, "control": 36})
    imagenet = _compare({"no-init": 50, "copy-rgb": 52, "transfer": 57, "rgb": 70, "fusion": 69},
                        {"no-init": 10, "copy-rgb": 15, "transfer": 30})
    table = merge_comparisons({"adapted": adapted, "imagenet": imagenet}, {"adapted": "A", "imagenet": "I"}, "HHA")
    assert list(table["rows"]) == [
        "no-init", "copy-rgb:adapted", "copy-rgb:imagenet", "transfer:adapted", "transfer:imagenet", "control",
        "no-init-frozen", "copy-rgb:adapted-frozen", "copy-rgb:imagenet-frozen", "transfer:adapted-frozen",
        "transfer:imagenet-frozen", "control-frozen", "rgb", "fusion:adapted", "fusion:imagenet",
        "fusion-val:adapted"]  # only the comparison that chose a weight on a validation split has the row
    assert table["rows"]["copy-rgb:imagenet"]["label"] == "copy from RGB: I"
    assert table["rows"]["fusion-val:adapted"]["label"].endswith("RGB weight chosen on depth_val: 0.7)")
    checks = {g["goal"]: g for g in goals(table, ["adapted", "imagenet"])}
    ft_a, ft_i = (checks[f"fine-tuned transfer ({t}) >= max(no init, copy-RGB ({t})) + 5"]
                  for t in ("adapted", "imagenet"))
    assert ft_a["met"] and ft_a["difference"] == 6.0 and ft_i["met"]  # 57 vs max(50, 52) + 5: met at exactly 5
    assert not checks["frozen transfer (adapted) >= frozen control + 5"]["met"]  # 40 vs 36: +4
    assert checks["frozen transfer (imagenet) >= frozen control + 5"]["difference"] == -6.0
    assert checks["control within 2 of no init"]["met"]
    assert checks["RGB + modality (adapted, 0.5 / 0.5) > RGB alone"]["met"]
    assert not checks["RGB + modality (imagenet, 0.5 / 0.5) > RGB alone"]["met"]
    assert checks["RGB + modality (adapted, weight chosen on val) > RGB alone"]["difference"] == 3.0
    assert "RGB + modality (imagenet, weight chosen on val) > RGB alone" not in checks  # no such row: no goal
    assert "| control within 2 of no init | 51.5 | 50.0 | +1.5 | **met** |" in goals_markdown(list(checks.values()))


class _Clock:
    """A stand-in for the stage timer's ``time`` module: stages take exactly the seconds they are given."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


def _run_stage(out: Path, clock: _Clock, finished: bool, seconds: float, skip_done: bool = False) -> dict:
    """One run of a single stage "data" that takes ``seconds`` and is (or not) already done when it starts."""
    def stage() -> None:
        clock.now += seconds

    StageTimer(out / "report" / "timings.json").run("data", stage, lambda: finished, skip_done=skip_done)
    return json.loads((out / "report" / "timings.json").read_text())


def test_a_rerun_keeps_the_measured_stage_time_and_records_the_skip_beside_it(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(stages_module, "time", clock)
    assert _run_stage(tmp_path, clock, finished=False, seconds=42.0) == {"data": {"seconds": 42.0}}
    assert _run_stage(tmp_path, clock, finished=True, seconds=0.5) == {"data": {"seconds": 42.0, "skip_seconds": 0.5}}
    assert _run_stage(tmp_path, clock, finished=False, seconds=7.0) == {"data": {"seconds": 7.0, "skip_seconds": 0.5}}
    table = timings_markdown(read_timings(tmp_path / "report" / "timings.json"))
    assert "| stage | work | rerun, already done |" in table and "| data | 7.0 | 0.5 |" in table


def test_timings_of_the_older_form_read_as_work_times(tmp_path):
    path = tmp_path / "timings.json"
    path.write_text(json.dumps({"dataset": 62.0, "proposals": 93.5}))
    assert read_timings(path) == {"dataset": {"seconds": 62.0}, "proposals": {"seconds": 93.5}}
    assert read_timings(tmp_path / "missing.json") == {}


def test_skip_done_does_not_run_a_finished_stage(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(stages_module, "time", clock)
    assert _run_stage(tmp_path, clock, finished=False, seconds=9.0, skip_done=True) == {"data": {"seconds": 9.0}}
    # done: the stage function is not called (it would add 9 s), the check's time is the skip time
    assert _run_stage(tmp_path, clock, finished=True, seconds=9.0, skip_done=True) == {
        "data": {"seconds": 9.0, "skip_seconds": 0.0}}


def test_error_line_is_the_last_one_line_error_of_a_log():
    line = "xmodal-data nyud2-raw: error: /raw/bedroom_0001/d-1.0-2.pgm is truncated: 100 of 38417 bytes"
    assert error_line(f"2026 INFO starting\nsome: error: earlier\n{line}\n") == line
    assert error_line("Traceback (most recent call last):\n  File x\nRuntimeError: boom\n") is None
