"""``bench/gpu_check.sh``: CI-sized on the CPU (``DEVICE=cpu PROFILE=tiny``) every step runs and both summaries say
what it did; a failed or overlong step is recorded and the check goes on; wheels are set up before any step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.gpu_check import Step, run_step

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.sh"


def _check(tmp_path: Path, timeout: float, **env: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "check"
    full = {**os.environ, "DEVICE": "cpu", "PROFILE": "tiny", "OUT_DIR": str(out), "PYTHON": sys.executable,
            "WHEELS": str(tmp_path / "no-wheels"), "SITE": str(tmp_path / "site"), **env}
    proc = subprocess.run([str(SCRIPT)], env=full, capture_output=True, text=True, timeout=timeout)
    assert (out / "summary.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "summary.json").read_text()), (out / "summary.md").read_text()


def test_the_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)


@pytest.mark.slow
def test_every_step_runs_on_the_cpu_at_ci_size(tmp_path):
    proc, summary, md = _check(tmp_path, 3300, BUDGET_S="3000")  # generous: the 2 shared cores here are slow
    assert proc.returncode == 0, proc.stdout[-4000:]
    steps = summary["steps"]
    assert list(steps) == ["preflight", "cuda_tests", "demo_tiny", "data", "train_b2", "train_b4", "precompute",
                           "profile_demo"]
    assert steps["data"]["skipped"] == "already rendered"  # by the tiny demo: the benches read its data set
    ran = {k: v for k, v in steps.items() if "skipped" not in v}
    for name, r in ran.items():
        assert r["exit_code"] == 0 and not r["timed_out"] and r["seconds"] > 0, name
        assert "-m" in r["command"] and f"| {name} | 0 |" in md
    assert steps["preflight"]["numbers"]["missing"] == []
    assert steps["cuda_tests"]["numbers"]["tests"] == steps["cuda_tests"]["numbers"]["skipped"] > 0  # no CUDA here
    demo = steps["demo_tiny"]["numbers"]
    assert set(demo["stage_seconds"]) == {"dataset", "pretraining", "proposals", "rgb teacher", "precompute",
                                          "students", "compare"}
    assert demo["report"] and "mAP_hha" in demo and "mAP_flow" in demo
    for b in (2, 4):
        assert set(steps[f"train_b{b}"]["numbers"]) == {"alexnet", "vgg16"}
        assert all(v["http_steps_per_s"] > 0 for v in steps[f"train_b{b}"]["numbers"].values())
    pre = steps["precompute"]["numbers"]
    assert pre["ratio_vs_pipelined_ideal"] > 0 and "ratio_vs_gpu_bound" not in pre  # a CPU device
    assert "rgb" in steps["precompute"]["command"]  # the tiny demo's RGB teacher, not a random stand-in
    rerun = (tmp_path / "check" / "logs" / "profile_demo.log").read_text()
    stages = [line for line in rerun.splitlines() if line.startswith("== ")]
    assert len(stages) == 7 and all("(already done" in line for line in stages)  # PROFILE=tiny: a rerun, all done


@pytest.mark.slow
def test_a_failed_step_is_recorded_and_the_check_goes_on(tmp_path):
    # No data set rendered: both benches fail on their missing manifest.
    proc, summary, md = _check(tmp_path, 900, STEPS="train_b2,precompute")
    assert proc.returncode == 1 and summary["exit_code"] == 1
    assert list(summary["steps"]) == ["train_b2", "precompute"]
    for name, r in summary["steps"].items():
        assert r["exit_code"] not in (0, None) and not r["timed_out"]
        assert r["log_tail"] and f"## {name}: last lines of" in md
        assert "manifest.jsonl" in "\n".join(r["log_tail"])


@pytest.mark.slow
def test_wheels_are_installed_and_put_on_the_path_first(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "probe_mod-1.0-py3-none-any.whl", "w") as z:
        z.writestr("probe_mod.py", "VALUE = 42\n")
        z.writestr("probe_mod-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: probe-mod\nVersion: 1.0\n")
        z.writestr("probe_mod-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("probe_mod-1.0.dist-info/RECORD", "")
    proc, summary, _ = _check(tmp_path, 600, STEPS="preflight", WHEELS=str(wheels))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "site" / "probe_mod.py").read_text() == "VALUE = 42\n"
    assert summary["pythonpath"].split(":")[:2] == [str(tmp_path / "site"), str(REPO)]


def test_an_unknown_profile_is_named(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PROFILE": "huge", "OUT_DIR": str(tmp_path)}, timeout=120)
    assert proc.returncode != 0 and "PROFILE='huge' is not one of ['gpu', 'tiny']" in proc.stderr


def test_a_step_past_its_timeout_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    step = Step("stall", ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"], 1.0)
    r = run_step(step, tmp_path, timeout=3)
    assert r["timed_out"] and r["exit_code"] != 0
    stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    # The step's whole process group was stopped, not only its shell: the sleep is gone (or a zombie not yet reaped).
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
