"""Replicas of one store behind nginx: the rendered config, and a student training while a replica is killed."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from shared.features import decode_batch
from student_trainer.logs import read_metrics
from teacher_server.nginx_lb import NginxLbSettings, find_nginx, main, render_nginx_conf, start_nginx
from teacher_server.reader import ChunkReader
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import args_of, cli, kill9, wait_healthy
from xmodal_pipeline.procs import free_port

NGINX = find_nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light; "
                                                       ".ci/run installs it when run as root)")
TOKEN = "replica-secret"


def test_rendered_config_names_every_replica_and_the_servers_body_limit():
    conf = render_nginx_conf(NginxLbSettings(replicas=["127.0.0.1:8001", "10.0.0.7:8000", "[::1]:8002"]))
    servers = [ln.split()[1] for ln in conf.splitlines() if ln.strip().startswith("server ") and ln.endswith(";")]
    assert servers == ["127.0.0.1:8001", "10.0.0.7:8000", "[::1]:8002"]
    assert f"client_max_body_size {ServeSettings.model_fields['max_body_bytes'].default};" in conf
    assert "non_idempotent" in conf  # POST /features/batch is retried on the next replica too


@pytest.mark.parametrize("field", [{"replicas": ["no-port"]}, {"replicas": []},
                                   {"replicas": ["h:1"], "listen": "h:99999"}])
def test_bad_addresses_are_rejected(field):
    with pytest.raises(ValidationError):
        NginxLbSettings(**field)


def test_a_bad_address_fails_the_command_before_anything_is_written(tmp_path, capsys):
    assert main(["render", "--replicas", "no-port", "--out", str(tmp_path / "lb.conf")]) == 2
    assert "host:port" in capsys.readouterr().err and not (tmp_path / "lb.conf").exists()


@needs_nginx
def test_nginx_accepts_the_rendered_config(tmp_path):
    assert main(["render", "--replicas", "127.0.0.1:8001", "127.0.0.1:8002", "--out", str(tmp_path / "lb.conf")]) == 0
    check = subprocess.run([NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "lb.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def _replica(store: Path, port: int) -> subprocess.Popen:
    proc = cli("teacher_server.cli", "serve", "--stores", str(store), "--port", str(port), "--log-level", "warning",
               env={"TEACHER_TOKEN": TOKEN})
    wait_healthy(f"http://127.0.0.1:{port}")
    return proc


@contextlib.contextmanager
def _load_balancer(prefix: Path, ports: list[int]) -> Iterator[str]:
    """nginx over replicas on ``ports``, ready once it listens (no request through it yet)."""
    port = free_port()
    proc = start_nginx(prefix, NginxLbSettings(replicas=[f"127.0.0.1:{p}" for p in ports], listen=f"127.0.0.1:{port}"),
                       nginx=NGINX)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.communicate()[1] if proc.poll() is not None else ''}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        kill9(proc)


@contextlib.contextmanager
def _dying_replica() -> Iterator[tuple[int, list[bytes]]]:
    """A replica that reads each request and drops the connection unanswered, like one killed mid-request.

    Yields its port and the requests it swallowed.
    """
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    swallowed: list[bytes] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = server.accept()
                with conn:
                    swallowed.append(conn.recv(65536))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], swallowed
    finally:
        stop.set()
        thread.join(5)
        server.close()


@needs_nginx
def test_every_frame_through_nginx_matches_the_store_while_a_replica_dies_mid_request(tmp_path, synth_store):
    port = free_port()
    replica = _replica(synth_store, port)
    reader = ChunkReader([FeatureStore.open(synth_store)])
    ids = [fid for s in reader.stores for c in s.collections.values() for fid in c.ids]
    try:
        with _dying_replica() as (dead, swallowed), _load_balancer(tmp_path, [dead, port]) as url, \
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:  # no retries
            # Round robin sends one of the first two requests to the dying replica: nginx must resend it, POST too.
            for _ in range(2):
                batch = http.post("/features/batch", json={"ids": ids})
                assert batch.status_code == 200, batch.text
                assert [(e.id, e.data) for e in decode_batch(batch.content)] == [(f, reader.read(f).data) for f in ids]
            assert any(r.startswith(b"POST /features/batch") for r in swallowed)
            for fid in ids:
                chunk, resp = reader.read(fid), http.get(f"/features/{fid}")
                assert resp.status_code == 200 and resp.content == chunk.data and resp.headers["etag"] == chunk.etag
                assert http.get(f"/features/{fid}", headers={"If-None-Match": chunk.etag}).status_code == 304
            assert httpx.get(f"{url}/features/{ids[0]}").status_code == 401  # the replicas still check the token
    finally:
        reader.close()
        kill9(replica)


def _frames_served(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("teacher_frames_served_total{"))


@needs_nginx
@pytest.mark.slow
def test_student_trains_through_nginx_while_a_replica_is_killed(tmp_path, synth_tiny, synth_store):
    ports = [free_port(), free_port()]
    replicas = [_replica(synth_store, p) for p in ports]
    student = None
    try:
        with _load_balancer(tmp_path / "nginx", ports) as url:
            student = cli("student_trainer.cli", "transfer", *args_of(
                modality="hha", teacher_url=url, teacher_token=TOKEN, manifest=synth_tiny, out=tmp_path / "hha",
                profile="tiny", iterations=40, batch_size=4, log_every=5, checkpoint_every=20, loader_workers=1),
                "--no-progress")
            deadline = time.monotonic() + 120  # until both replicas carry the student's traffic
            while not all(_frames_served(p) > 0 for p in ports) and time.monotonic() < deadline:
                time.sleep(0.2)
            kill9(replicas[0])
            assert student.poll() is None, "the student finished before the replica was killed"
            _, err = student.communicate(timeout=600)
        assert student.returncode == 0, err[-3000:]
        assert "retrying" not in err  # the client never saw the dead replica: nginx resent its requests
        errors = [ln for ln in (tmp_path / "nginx" / "error.log").read_text().splitlines() if "[error]" in ln]
        assert any("upstream" in ln for ln in errors)  # nginx did meet the dead replica (refused or reset)
    finally:
        if student is not None and student.poll() is None:
            kill9(student)
        for r in replicas:
            kill9(r)
    rows = read_metrics(tmp_path / "hha" / "metrics.jsonl")
    assert rows[-1]["step"] == 40 and rows[-1]["loss"] < rows[0]["loss"]
