"""A trainer rides out a teacher-server outage shorter than ``--teacher-wait`` (one log line, same weights as an
undisturbed run) and stops with one clear line, no traceback, when the server does not come back in time.

The server is killed at a known point: after it has answered 3 batch requests (its access log says so), with
the trainer's one loader process fetching one step ahead (``--prefetch 1``) of 200 steps, so the outage always
lands mid-run. Backoff is capped at 0.5 s: the client's former 8 retries gave up after ~4 s of that, well
inside the 6-s outage here.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time

import pytest
import torch

from shared.client import TeacherClient, TeacherUnavailableError
from student_trainer.checkpoint import load_checkpoint
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from tests.servers import args_of, cli, free_port, kill9, wait_healthy

STEPS, OUTAGE_S = 200, 6.0


def _student_kw(out, manifest, url, wait: float) -> dict:
    return dict(modality="hha", teacher_url=url, manifest=manifest, out=out, profile="tiny", iterations=STEPS,
                batch_size=4, log_every=50, checkpoint_every=100, loader_workers=1, prefetch=1, teacher_wait=wait,
                teacher_backoff_max=0.5)


def _serve(store, port: int, access_log: bool) -> subprocess.Popen:
    proc = cli("teacher_server.cli", "serve", "--stores", str(store), "--port", str(port),
               "--log-level", "info" if access_log else "warning")
    wait_healthy(f"http://127.0.0.1:{port}")
    return proc


def _after_batches(server: subprocess.Popen, n: int) -> threading.Event:
    """Set once the server's access log (stdout) shows ``n`` answered batch requests; keeps draining it."""
    seen = threading.Event()

    def read() -> None:
        count = 0
        for line in server.stdout:  # type: ignore[union-attr]
            count += "POST /features/batch" in line and " 200" in line
            if count >= n:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen


def _kill_mid_run(store, port: int, student: subprocess.Popen) -> None:
    server = _serve(store, port, access_log=True)
    try:
        seen = _after_batches(server, 3)
        deadline = time.monotonic() + 300
        while not seen.wait(0.2):
            assert student.poll() is None, student.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the student never fetched 3 batches"
    finally:
        kill9(server)


@pytest.mark.slow
def test_outage_shorter_than_teacher_wait_is_ridden_out_with_one_line(tmp_path, synth_tiny, synth_store, teacher_url):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    student = cli("student_trainer.cli", "transfer",
                  *args_of(**_student_kw(tmp_path / "run", synth_tiny, url, wait=60)), "--no-progress")
    server = None
    try:
        _kill_mid_run(synth_store, port, student)
        time.sleep(OUTAGE_S)
        server = _serve(synth_store, port, access_log=False)
        _, err = student.communicate(timeout=600)
    finally:
        kill9(student)
        if server is not None:
            kill9(server)
    assert student.returncode == 0, err[-3000:]
    waits = [ln for ln in err.splitlines() if "unreachable" in ln]
    assert len(waits) == 1, err[-3000:]  # one line for the outage, not one per retry
    assert f"teacher service {url} unreachable" in waits[0] and "retrying for up to" in waits[0]
    assert "answers again after" in err
    # The outage changed nothing: the same seed undisturbed (in-process, another server on the same store).
    ref = TransferSettings(**_student_kw(tmp_path / "ref", synth_tiny, teacher_url, wait=60)
                           | {"loader_workers": 0, "progress": False})
    run_transfer(ref)
    got, want = (load_checkpoint(d / "checkpoint.pt")["model"] for d in (tmp_path / "run", ref.out))
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_server_that_never_returns_ends_the_trainer_with_one_line(tmp_path, synth_tiny, synth_store):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    student = cli("student_trainer.cli", "transfer",
                  *args_of(**_student_kw(tmp_path / "run", synth_tiny, url, wait=3)), "--no-progress")
    try:
        _kill_mid_run(synth_store, port, student)
        _, err = student.communicate(timeout=300)
    finally:
        kill9(student)
    assert student.returncode == 2, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and f"teacher service {url} unreachable" in errors[0], err[-3000:]
    assert "gave up after retrying for" in errors[0]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_client_gives_up_after_its_wait_with_one_warning(caplog):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.DEBUG, logger="shared.client"), \
            TeacherClient(url, wait=1.0, backoff=0.05, max_backoff=0.2) as c, \
            pytest.raises(TeacherUnavailableError, match=f"teacher service {url} unreachable .*gave up after"):
        c.info()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying for up to" in warnings[0].getMessage()
    assert c.retried >= 3  # it did retry, at debug level
