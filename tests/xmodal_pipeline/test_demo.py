"""The demo's per-profile folders and the stage timings (shared with the recipes), which a rerun that skips
everything must not overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmodal_pipeline import stages as stages_module
from xmodal_pipeline.demo import DemoSettings
from xmodal_pipeline.procs import error_line
from xmodal_pipeline.report import timings_markdown
from xmodal_pipeline.stages import StageTimer, read_timings


@pytest.mark.parametrize(("profile", "out"), [("tiny", "runs/demo-tiny"), ("quick", "runs/demo"),
                                              ("full", "runs/demo-full")])
def test_each_profile_has_its_own_default_folder(profile, out, monkeypatch):
    monkeypatch.delenv("XMODAL_DEMO_OUT", raising=False)
    assert DemoSettings(profile=profile).out == Path(out)
    assert DemoSettings(profile=profile, out="elsewhere").out == Path("elsewhere")  # --out / OUT= wins


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
