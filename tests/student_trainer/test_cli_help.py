"""``--help`` of every command-line tool stays fast: building the parsers imports no torch, torchvision, OpenCV,
matplotlib or zarr (those load inside the command that needs them). ``student-trainer --help`` took 4-5 s on
the development VM while it imported the detector stack; 0.45 s without."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.servers import REPO

HEAVY = ["torch", "torchvision", "cv2", "matplotlib", "zarr"]


@pytest.mark.parametrize("module", ["student_trainer.cli", "teacher_server.cli", "xmodal_data.cli",
                                    "xmodal_pipeline.demo", "xmodal_pipeline.recipes.cli"])
def test_help_imports_no_heavy_module(module):
    code = (
        "import contextlib, io, json, sys, runpy\n"
        f"with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    sys.argv = [{module!r}, '--help']; runpy.run_module({module!r}, run_name='__main__')\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
