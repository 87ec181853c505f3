"""Shared fixtures: the real sample data beside the repo, the tiny synthetic set, small teachers and stores."""

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
    from xmodal_data.encode import encode_manifest
    from xmodal_data.synth import SynthConfig, generate_synth

    manifest = generate_synth(tmp_path_factory.mktemp("synth"), SynthConfig.profile("tiny"), workers=1, progress=False)
    encode_manifest(manifest, workers=1, progress=False)
    return manifest


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A small random AlexNet-style RGB trunk saved as a checkpoint teacher."""
    from tests.teacher_server.conftest import make_teacher_checkpoint

    return make_teacher_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="session")
def teacher(teacher_ckpt):
    from shared.nets.teachers import load_teacher

    return load_teacher("checkpoint", str(teacher_ckpt))


@pytest.fixture(scope="session")
def synth_teacher_ckpt(tmp_path_factory) -> Path:
    from tests.teacher_server.conftest import make_teacher_checkpoint

    return make_teacher_checkpoint(tmp_path_factory.mktemp("synth_teacher") / "teacher.pt", seed=3)


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory, synth_tiny, synth_teacher_ckpt) -> Path:
    """The teacher's maps of every frame of ``synth_tiny`` (8-frame shards)."""
    from shared.features import encoding
    from shared.nets.teachers import load_teacher
    from teacher_server.precompute import precompute

    path = tmp_path_factory.mktemp("synth_store") / "store"
    precompute(path, [synth_tiny], load_teacher("checkpoint", str(synth_teacher_ckpt)), encoding("f32-zstd1"),
               shard_frames=8, loader_workers=0, progress=False)
    return path


@pytest.fixture(scope="session")
def teacher_url(synth_store):
    """``synth_store`` served by a real uvicorn on 127.0.0.1 (in a thread)."""
    from teacher_server.app import create_app
    from teacher_server.settings import ServeSettings
    from tests.servers import uvicorn_thread

    with uvicorn_thread(create_app(ServeSettings(stores=[synth_store]))) as url:
        yield url
