"""Shared fixtures: paths to the real sample data beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """../shared/data (NYUD2 frames, MATLAB HHA reference, video pairs); see its README for provenance."""
    if not SAMPLE_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SAMPLE_DATA}: clone the repo beside the handbook's shared/")
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """The built-in synthetic set, tiny profile, with HHA and flow images encoded (manifest path)."""
    from shared.encode import encode_manifest
    from shared.synth import SynthConfig, generate_synth

    manifest = generate_synth(tmp_path_factory.mktemp("synth"), SynthConfig.profile("tiny"), workers=1, progress=False)
    encode_manifest(manifest, workers=1, progress=False)
    return manifest
