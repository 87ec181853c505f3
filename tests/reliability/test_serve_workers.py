"""``serve --workers N`` hands every validated setting to its worker processes (through ``TEACHER_*`` env vars)."""

from __future__ import annotations

import os

import httpx
import pytest
import uvicorn

from teacher_server.cli import main as teacher_server
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import cli, free_port, kill9, wait_healthy


def test_workers_rebuild_the_whole_settings_from_env(synth_store, monkeypatch):
    """What a worker's ``create_app_from_env`` reads equals what the command line asked for, field by field."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("TEACHER_")})
    seen: dict[str, ServeSettings] = {}

    def fake_run(app, **kw):  # instead of forking workers: build the settings a worker would build
        assert app == "teacher_server.app:create_app_from_env" and kw["workers"] == 2
        seen["worker"] = ServeSettings()  # type: ignore[call-arg]

    monkeypatch.setattr(uvicorn, "run", fake_run)
    argv = ["serve", "--stores", str(synth_store), "--workers", "2", "--max-batch", "7", "--max-body-bytes", "4096",
            "--port", "8123", "--host", "127.0.0.2", "--log-level", "debug", "--token", "tok"]
    assert teacher_server(argv) == 0
    want = ServeSettings(stores=[str(synth_store)], workers=2, max_batch=7, max_body_bytes=4096, port=8123,
                         host="127.0.0.2", log_level="debug", token="tok")
    assert seen["worker"].model_dump() == want.model_dump()


@pytest.mark.slow
def test_two_workers_both_apply_a_non_default_max_batch(synth_store):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = cli("teacher_server.cli", "serve", "--stores", str(synth_store), "--port", str(port), "--workers", "2",
                 "--max-batch", "7", "--log-level", "warning")
    try:
        wait_healthy(url)
        ids = next(iter(FeatureStore.open(synth_store).collections.values())).ids[:8]
        for _ in range(12):  # a fresh connection each time: the kernel spreads them over both workers
            with httpx.Client(base_url=url, timeout=10) as http:
                assert http.get("/info").json()["max_batch"] == 7
                too_many = http.post("/features/batch", json={"ids": ids})
                assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_large"
                assert http.post("/features/batch", json={"ids": ids[:7]}).status_code == 200
    finally:
        kill9(server)
