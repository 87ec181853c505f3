"""The steps of the prepared GPU check, run one after another by ``bench/gpu_check.sh`` (which sets up the Python
environment first), each in its own process group with its own timeout out of one time budget, continuing past a
failed step; ``OUT_DIR/summary.json`` and ``OUT_DIR/summary.md`` are rewritten after every step, so a check that is
cut short still says what it measured.

Steps: ``preflight`` (interpreter, torch, the device, every module the project imports, OpenCV contrib);
``cuda_tests`` (``pytest -m cuda tests/devices``); ``demo_tiny`` (the tiny demo on ``DEVICE``); ``data`` (the synthetic
set the benches read); ``train_b<N>`` (``bench/train.py``, AlexNet and VGG16 teachers, per batch size);
``precompute`` (``bench/precompute.py``); ``profile_demo`` (the demo of ``PROFILE``'s demo profile, given whatever
budget is left: it resumes where a cut-short run stopped, so rerunning the check finishes it).

Environment: ``DEVICE`` (cuda), ``PROFILE`` (gpu: benches at full size, the quick demo; tiny: CI sizes on any
machine, and the last step reruns the tiny demo, which must find every stage done), ``OUT_DIR``, ``BUDGET_S``
(540: the whole check, wheel set-up included), ``STEPS`` (comma-separated names: run only these).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]

# Every third-party module the project imports at run time (the GPU machine has no registry: a missing one must
# be named before the steps fail on it one by one).
MODULES = ("torch", "torchvision", "numpy", "scipy", "h5py", "cv2", "zarr", "numcodecs", "google_crc32c",
           "fastapi", "starlette", "uvicorn", "httpx", "pydantic", "pydantic_settings", "tqdm", "prometheus_client",
           "matplotlib", "filelock", "pytest")
_WHY = {"pytest": "the cuda_tests step needs pytest (with pluggy and iniconfig): add their wheels to the .whl folder",
        "cv2.ximgproc": "opencv-contrib is missing (the plain opencv has no cv2.ximgproc): the demos' proposals "
                        "stage (Edge Boxes) fails; add opencv-contrib-python-headless (py312-wheels packs it)"}


@dataclass(frozen=True)
class Profile:
    """Sizes of one check: the data set the benches read, the last demo, and the benches' flags."""

    data: str
    demo: str
    train_batches: tuple[int, ...]
    train_flags: tuple[str, ...]
    precompute_flags: tuple[str, ...]


def _profiles(cores: int) -> dict[str, Profile]:
    train_workers = str(max(2, cores // 2))  # half the cores decode HHA and fetch targets; the rest serve and step
    return {
        "gpu": Profile("quick", "quick", (16, 128), ("--workers", train_workers),
                       ("--frames", "2000", "--rounds", "3")),
        "tiny": Profile("tiny", "tiny", (2, 4), ("--workers", "1", "--steps", "2", "--warmup", "1", "--repeats", "1",
                                                "--input-size", "96", "128"),
                        ("--frames", "24", "--rounds", "1", "--batch-size", "8", "--shard-frames", "16")),
    }


@dataclass
class Step:
    """One command of the check (``argv``, or a function giving it when the step starts: it may depend on what
    earlier steps left). ``share``: the most of the whole budget it may take; ``numbers``: its key results, read
    from what it wrote; ``skip``: a reason not to run it, if any."""

    name: str
    argv: list[str] | Callable[[], list[str]]
    share: float
    numbers: Callable[[], dict[str, Any]] = dict
    skip: Callable[[], str | None] = lambda: None

    def command(self) -> list[str]:
        return self.argv() if callable(self.argv) else self.argv


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def preflight(out: Path) -> int:
    """Write what this machine offers (``out``, JSON) and print what is missing; exit status 1 if anything is."""
    import importlib

    found: dict[str, str | None] = {}
    for name in (*MODULES, "cv2.ximgproc"):
        try:
            mod = importlib.import_module(name) if name != "cv2.ximgproc" else importlib.import_module("cv2")
            if name == "cv2.ximgproc" and not hasattr(mod, "ximgproc"):
                raise ImportError("cv2 has no ximgproc")
            found[name] = getattr(mod, "__version__", "present")
        except ImportError as e:
            found[name] = None
            print(f"missing: {name} ({e}){': ' + _WHY[name] if name in _WHY else ''}", flush=True)
    info: dict[str, Any] = {"python": sys.version.split()[0], "modules": found,
                            "missing": [k for k, v in found.items() if v is None]}
    if found["torch"]:
        import torch

        from bench.common import machine

        info.update(machine=machine(), cuda=torch.cuda.is_available(), torch_cuda=torch.version.cuda,
                    gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
        print(f"{info['machine']}; CUDA available: {info['cuda']}", flush=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    return 1 if info["missing"] else 0


def _junit_numbers(path: Path) -> dict[str, Any]:
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}


def _demo_numbers(out: Path) -> dict[str, Any]:
    timings = _read_json(out / "report" / "timings.json")
    numbers: dict[str, Any] = {"stage_seconds": {k: v.get("seconds", v.get("skip_seconds")) for k, v in
                                                 timings.items()},
                               "report": (out / "report" / "report.md").is_file()}
    for compare in sorted((out / "runs").glob("compare-*/compare.json")):
        rows = _read_json(compare)["rows"]
        numbers[f"mAP_{compare.parent.name.removeprefix('compare-')}"] = {
            k: round(r["mAP"]["mean"], 2) for k, r in rows.items()}
    return numbers


def _train_numbers(path: Path) -> dict[str, Any]:
    return {r["teacher"]: {"http_steps_per_s": round(r["http"]["steps_per_s"], 2),
                           "memory_steps_per_s": round(r["memory"]["steps_per_s"], 2),
                           "online_steps_per_s": round(r["online"]["steps_per_s"], 2),
                           "http_vs_memory": round(r["http_vs_memory"], 3),
                           "speedup_fraction_of_ideal": round(r["speedup_fraction_of_ideal"], 3),
                           "wait_fraction": round(r["http"]["wait_fraction"], 4)} for r in _read_json(path)["rows"]}


def _precompute_numbers(path: Path) -> dict[str, Any]:
    res = _read_json(path)
    keys = ("forward", "loader", "loader_all_cores", "writer", "precompute", "ratio_vs_pipelined_ideal",
            "ratio_vs_gpu_bound")
    return {"teacher": res["teacher"], "loader_workers": res["loader_workers"],
            **{k: round(res["median"][k], 3) for k in keys if k in res["median"]}}


def make_steps(out: Path, profile: Profile, device: str, py: str) -> list[Step]:
    """The check's steps for ``profile`` on ``device``, writing under ``out``."""
    tiny, data = out / "demo-tiny", out / f"demo-{profile.data}" / "data" / "synth"
    manifest = data / "manifest.jsonl"
    demo = out / f"demo-{profile.demo}"

    def demo_step(name: str, folder: Path, demo_profile: str, share: float) -> Step:
        return Step(name, [py, "-m", "xmodal_pipeline.demo", "--profile", demo_profile, "--device", device,
                           "--out", str(folder)], share, lambda: _demo_numbers(folder))

    def teacher() -> str:  # the tiny demo's RGB detector trunk when it trained one (a checkpoint teacher)
        ckpt = tiny / "runs" / "rgb" / "checkpoint.pt"
        return str(ckpt) if ckpt.is_file() else "alexnet"

    steps = [
        Step("preflight", [py, "-m", "bench.gpu_check", "--preflight", str(out / "preflight.json")], 0.1,
             lambda: {k: v for k, v in _read_json(out / "preflight.json").items() if k != "modules"}),
        Step("cuda_tests", [py, "-m", "pytest", "-m", "cuda", "tests/devices", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={out / 'cuda_tests.xml'}"], 0.3,
             lambda: _junit_numbers(out / "cuda_tests.xml")),
        demo_step("demo_tiny", tiny, "tiny", 0.3),
        Step("data", [py, "-m", "xmodal_data.cli", "synth", "--profile", profile.data, "--out", str(data), "--seed",
                      "0", "--no-progress"], 0.2, lambda: {"frames": len(manifest.read_text().splitlines()) - 1},
             skip=lambda: "already rendered" if (data / "contact_sheet.png").is_file() else None),
    ]
    for b in profile.train_batches:
        path = out / f"train_b{b}.json"
        steps.append(Step(f"train_b{b}", [py, "-m", "bench.train", "--manifest", str(manifest), "--teachers", "alexnet",
                                          "vgg16", "--batch-size", str(b), "--device", device, *profile.train_flags,
                                          "--out", str(path)], 0.25, lambda path=path: _train_numbers(path)))
    steps.append(Step("precompute", lambda: [py, "-m", "bench.precompute", "--manifest", str(manifest), "--teacher",
                                             teacher(), "--device", device, *profile.precompute_flags,
                                             "--out", str(out / "precompute.json")], 0.2,
                      lambda: _precompute_numbers(out / "precompute.json")))
    steps.append(demo_step("profile_demo", demo, profile.demo, 1.0))
    return steps


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the step's process group (the demo stops its children on it), SIGKILL what is left after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, logs: Path, timeout: float) -> dict[str, Any]:
    """Run ``step`` with its output in ``logs/<name>.log``; its command, exit code, seconds and key numbers."""
    log, argv = logs / f"{step.name}.log", step.command()
    res: dict[str, Any] = {"command": shlex.join(argv), "log": str(log), "timeout_s": round(timeout)}
    t = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            res["exit_code"] = proc.wait(timeout)
            res["timed_out"] = False
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            res["exit_code"], res["timed_out"] = proc.returncode, True
        except BaseException:  # Ctrl-C: never leave a step's processes behind
            _stop_group(proc)
            raise
    res["seconds"] = round(time.monotonic() - t, 1)
    try:
        res["numbers"] = step.numbers()
    except (OSError, ValueError, KeyError, TypeError, ET.ParseError) as e:
        res["numbers"] = {}
        if res["exit_code"] == 0:
            res["note"] = f"finished, but its results could not be read: {type(e).__name__}: {e}"
    if res["exit_code"] != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        res["log_tail"] = tail
    return res


def _cell(numbers: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {json.dumps(v, separators=(', ', ': '))}" for k, v in numbers.items()).replace("|", "/")


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json`` and ``summary.md`` (one row per step) under ``out``, replaced atomically."""
    lines = [f"# GPU check ({summary['profile']} profile on {summary['device']})", "",
             f"Machine: {summary.get('machine', '?')}; load average {summary['load_average_start']} -> "
             f"{summary['load_average_end']}; {summary['seconds']:.0f} s of a {summary['budget_s']:.0f}-s budget; "
             f"exit status {summary['exit_code']}", "",
             "| step | exit code | seconds | key numbers | command |", "|---|---|---|---|---|"]
    for name, r in summary["steps"].items():
        status = ("skipped" if "skipped" in r else f"{r['exit_code']}" + (" (timed out)" if r.get("timed_out") else ""))
        lines.append(f"| {name} | {status} | {r.get('seconds', '')} | {_cell(r.get('numbers', {}))}"
                     f"{' ' + r['skipped'] if 'skipped' in r else ''}{' ' + r['note'] if 'note' in r else ''} | "
                     f"`{r.get('command', '')}` |")
    for name, r in summary["steps"].items():
        if r.get("log_tail"):
            lines += ["", f"## {name}: last lines of {r['log']}", "", "```", *r["log_tail"], "```"]
    for suffix, text in ((".json", json.dumps(summary, indent=2) + "\n"), (".md", "\n".join(lines) + "\n")):
        tmp = out / f".summary{suffix}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"summary{suffix}")


def run_check(out: Path, profile_name: str, device: str, budget: float, started: float,
              only: set[str] | None) -> int:
    """Every step (or those in ``only``) within ``budget`` seconds counted from ``started`` (epoch seconds);
    returns 0 when every step that ran exited 0."""
    profiles = _profiles(os.cpu_count() or 1)
    if profile_name not in profiles:
        raise SystemExit(f"gpu_check: PROFILE={profile_name!r} is not one of {sorted(profiles)}")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the running step's group is stopped too
    steps = make_steps(out, profiles[profile_name], device, sys.executable)
    if only is not None and (unknown := only - {s.name for s in steps}):
        raise SystemExit(f"gpu_check: STEPS names unknown steps {sorted(unknown)}; known: {[s.name for s in steps]}")
    summary: dict[str, Any] = {"profile": profile_name, "device": device, "budget_s": budget,
                               "load_average_start": [round(v, 2) for v in os.getloadavg()],
                               "pythonpath": os.environ.get("PYTHONPATH", ""), "steps": {}}
    failed = False
    for step in steps:
        if only is not None and step.name not in only:
            continue
        left = budget - (time.time() - started)
        timeout = min(step.share * budget, left - 5)
        reason = step.skip() or (f"only {left:.0f} s of the budget left" if timeout < 20 else None)
        print(f"== {step.name}" + (f": skipped ({reason})" if reason else f" (timeout {timeout:.0f} s)"), flush=True)
        if reason:
            summary["steps"][step.name] = {"command": shlex.join(step.command()), "skipped": reason}
        else:
            r = summary["steps"][step.name] = run_step(step, logs, timeout)
            failed |= r["exit_code"] != 0
            print(f"   {step.name}: exit {r['exit_code']}{' (timed out)' if r['timed_out'] else ''}, "
                  f"{r['seconds']} s; {_cell(r['numbers'])}", flush=True)
            for line in r.get("log_tail", []):
                print(f"   | {line}", flush=True)
            if step.name == "preflight":
                summary["machine"] = r["numbers"].get("machine", "?")
        summary.update(seconds=time.time() - started, load_average_end=[round(v, 2) for v in os.getloadavg()],
                       exit_code=int(failed))
        write_summary(out, summary)
    print(f"summary: {out / 'summary.md'} and {out / 'summary.json'}")
    return int(failed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preflight", type=Path, metavar="JSON", help="only check the environment, writing JSON")
    args = p.parse_args()
    if args.preflight:
        sys.exit(preflight(args.preflight))
    env = os.environ
    out = Path(env.get("OUT_DIR", "runs/gpu-check")).resolve()
    only = {s.strip() for s in env["STEPS"].split(",") if s.strip()} if env.get("STEPS") else None
    sys.exit(run_check(out, env.get("PROFILE", "gpu"), env.get("DEVICE", "cuda"), float(env.get("BUDGET_S", 540)),
                       float(env.get("GPU_CHECK_STARTED", time.time())), only))


if __name__ == "__main__":
    main()
