"""The demo's child processes: health polling, a failed server named with its log, every child stopped on exit."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from shared.errors import XModalError
from tests.servers import uvicorn_thread
from xmodal_pipeline.procs import ChildProcesses, free_port, poll_healthy


def test_poll_healthy_answers_true_for_a_healthy_server_and_false_for_none():
    app = FastAPI()
    app.get("/healthz")(lambda: {"status": "ok"})
    with uvicorn_thread(app) as url:
        assert poll_healthy(url, timeout=30)
    assert not poll_healthy(f"http://127.0.0.1:{free_port()}", timeout=0.3)  # nothing listens there


def test_a_server_that_exits_fails_at_once_naming_its_exit_code_and_log(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with ChildProcesses(tmp_path / "logs") as procs:
        proc = procs.start("server", "json.tool", [str(tmp_path / "missing.json")])  # exits 2 (argparse) with an error
        assert not poll_healthy(url, timeout=600, proc=proc)  # returns when the process exits, not at the timeout
        with pytest.raises(XModalError, match=r"server failed \(exit code 2\): .*error: .*\[log: .*server\.log\]") as e:
            procs.wait_healthy(url, proc, timeout=600)
        assert "missing.json" in str(e.value)  # its one-line error says why
        done = procs.start("done", "json.tool", ["--help"])  # exits 0: still not a server
        with pytest.raises(XModalError, match=r"server for .* exited early"):
            procs.wait_healthy(url, done, timeout=600)


def test_every_child_is_stopped_when_the_block_ends(tmp_path):
    port = free_port()
    with ChildProcesses(tmp_path / "logs", grace_s=5) as procs:
        proc = procs.start("web", "http.server", ["--bind", "127.0.0.1", str(port)])  # serves 404 on /healthz
        assert not poll_healthy(f"http://127.0.0.1:{port}", timeout=1.0, proc=proc)
        assert proc.poll() is None
    assert proc.poll() is not None
