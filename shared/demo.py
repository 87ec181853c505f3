"""``xmodal-demo``: the end-to-end job on the built-in synthetic dataset.

Stages run in order and each is resumable (a rerun skips finished work). Implemented so far:
render the paired dataset, encode HHA and flow images, draw the contact sheet. Teacher precompute,
serving, student training and detection join as their components land.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import XModalError
from shared.settings import add_settings_arguments, settings_from_args

__all__ = ["DemoSettings", "main", "run_demo"]


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_DEMO_", extra="ignore")

    profile: Literal["tiny", "quick", "full"] = Field("quick", description="dataset and training size profile")
    out: Path = Field(Path("runs/demo"), description="folder for data, store, checkpoints and the report")
    seed: int = Field(0, description="seed of the dataset and of every training run")
    workers: int | None = Field(None, ge=1, description="processes for data work (default: all cores)")
    progress: bool = Field(True, description="show progress bars")


def run_demo(s: DemoSettings) -> dict[str, float]:
    """Run every stage; returns seconds per stage (also written to ``<out>/report/timings.json``)."""
    from shared.encode import encode_manifest
    from shared.manifest import read_manifest
    from shared.synth.config import SynthConfig
    from shared.synth.contact_sheet import make_contact_sheet
    from shared.synth.dataset import generate_synth

    report = s.out / "report"
    report.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    config = SynthConfig.profile(s.profile).model_copy(update={"seed": s.seed})
    manifest = generate_synth(s.out / "data" / "synth", config, workers=s.workers, progress=s.progress)
    timings["render"] = time.perf_counter() - t

    t = time.perf_counter()
    encode_manifest(manifest, workers=s.workers, progress=s.progress)
    timings["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    sheet = make_contact_sheet(manifest, report / "contact_sheet.png")
    timings["contact_sheet"] = time.perf_counter() - t

    (report / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    m = read_manifest(manifest)
    print(f"dataset: {manifest} ({len(m)} frames; splits {m.splits()})")
    print(f"contact sheet: {sheet}")
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmodal-demo",
        description="End-to-end demo of cross-modal supervision transfer on the built-in synthetic dataset. "
        "Resumable: rerun the same command to continue after an interruption.",
    )
    add_settings_arguments(parser, DemoSettings)
    args = parser.parse_args(argv)
    try:
        run_demo(settings_from_args(DemoSettings, args))
    except XModalError as e:
        print(f"xmodal-demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xmodal-demo: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
