"""Atomic writes: the old content or the whole new one, never a part; durable writes fsync file and folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared import atomic
from shared.atomic import atomic_open, remove_stale_temps, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_writes_replace_whole_files_and_leave_no_temp(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and path.read_text().endswith("\n")
    write_text_atomic(path, "two")
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01", durable=False)
    assert path.read_text() == "two" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_an_error_inside_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path, "wb") as fh:
        fh.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_durable_fsyncs_file_and_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    write_text_atomic(tmp_path / "x.json", "{}")
    assert len(synced) == 2 and ".x.json.tmp-" in synced[0] and synced[1] == os.path.realpath(tmp_path)
    synced.clear()
    write_text_atomic(tmp_path / "y.png", "img", durable=False)
    assert synced == []


def test_kill9_mid_write_leaves_the_old_file_and_a_removable_temp(tmp_path):
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"done": "old"})
    mark = tmp_path / "half"
    code = (
        "import sys, time; from pathlib import Path; from shared.atomic import atomic_open\n"
        f"with atomic_open({str(path)!r}, 'w') as fh:\n"
        "    fh.write('{\"done\": \"ne'); fh.flush(); Path(%r).write_text('x'); time.sleep(60)\n" % str(mark)
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "writer did not start"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert json.loads(path.read_text()) == {"done": "old"}
    assert remove_stale_temps(path) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["half", "summary.json"]


def test_only_whole_file_modes():
    with pytest.raises(ValueError, match="mode"), atomic_open("x", "ab"):  # type: ignore[arg-type]
        pass
