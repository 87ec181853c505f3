"""Several students, one teacher: real processes against a real server, including a server restart."""

import time

import pytest
import torch

from student_trainer.checkpoint import load_checkpoint
from student_trainer.logs import read_metrics
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from tests.servers import args_of, cli, free_port, kill9, wait_healthy


def _serve(store, port):
    proc = cli("teacher_server.cli", "serve", "--stores", str(store), "--port", str(port), "--log-level", "warning")
    wait_healthy(f"http://127.0.0.1:{port}")
    return proc


def _student_kw(out, manifest, url, modality, seed, iterations) -> dict:
    return dict(modality=modality, teacher_url=url, manifest=manifest, out=out, profile="tiny", iterations=iterations,
                batch_size=4, seed=seed, log_every=5, checkpoint_every=10, loader_workers=1)


def _student(*spec):
    return cli("student_trainer.cli", "transfer", *args_of(**_student_kw(*spec)), "--no-progress")


@pytest.mark.slow
def test_hha_flow_and_second_hha_seed_train_at_once_through_a_server_restart(tmp_path, synth_tiny, synth_store,
                                                                            teacher_url):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(synth_store, port)
    runs = {"hha0": ("hha", 0), "flow0": ("flow", 0), "hha1": ("hha", 1)}
    students = {name: _student(tmp_path / name, synth_tiny, url, mod, seed, 40) for name, (mod, seed) in runs.items()}
    try:
        # Let them get going, then kill -9 the teacher and bring it back on the same port.
        deadline = time.monotonic() + 120
        while not all((tmp_path / n / "metrics.jsonl").is_file() for n in runs) and time.monotonic() < deadline:
            time.sleep(0.2)
        kill9(server)
        time.sleep(2.0)
        server = _serve(synth_store, port)
        results = {name: p.communicate(timeout=600) for name, p in students.items()}
    finally:
        for p in students.values():
            if p.poll() is None:
                kill9(p)
        kill9(server)
    for name, p in students.items():
        assert p.returncode == 0, f"{name}: {results[name][1][-3000:]}"
        rows = read_metrics(tmp_path / name / "metrics.jsonl")
        assert [r["step"] for r in rows] == list(range(5, 41, 5))  # no step lost or repeated
        assert rows[-1]["loss"] < rows[0]["loss"], name
    logs = "".join(err for _, err in results.values())
    assert "retrying" in logs  # at least one student saw the restart and waited it out
    # The restart changed nothing: same seed, undisturbed (in-process, another server on the same store) = same weights.
    for name in ("hha0", "flow0"):
        ref = TransferSettings(**_student_kw(tmp_path / f"ref-{name}", synth_tiny, teacher_url, *runs[name], 40)
                               | {"loader_workers": 0, "progress": False})
        run_transfer(ref)
        got, want = (load_checkpoint(d / "checkpoint.pt")["model"] for d in (tmp_path / name, ref.out))
        assert all(torch.equal(got[k], want[k]) for k in want), name
