"""Fixtures: a teacher store over the tiny synthetic set, served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.features import encoding
from shared.nets.teachers import load_teacher
from teacher_server.app import create_app
from teacher_server.precompute import precompute
from teacher_server.settings import ServeSettings
from tests.servers import uvicorn_thread
from tests.teacher_server.conftest import make_teacher_checkpoint


@pytest.fixture(scope="session")
def synth_teacher_ckpt(tmp_path_factory) -> Path:
    return make_teacher_checkpoint(tmp_path_factory.mktemp("synth_teacher") / "teacher.pt", seed=3)


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory, synth_tiny, synth_teacher_ckpt) -> Path:
    path = tmp_path_factory.mktemp("synth_store") / "store"
    precompute(path, [synth_tiny], load_teacher("checkpoint", str(synth_teacher_ckpt)), encoding("f32-zstd1"),
               shard_frames=8, loader_workers=0, progress=False)
    return path


@pytest.fixture(scope="session")
def teacher_url(synth_store):
    with uvicorn_thread(create_app(ServeSettings(stores=[synth_store]))) as url:
        yield url
