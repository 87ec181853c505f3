"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The bytes go to a temp file in the destination's folder (same filesystem, so the rename is atomic), which is
fsynced and renamed over the destination with ``os.replace``; then the folder is fsynced so the rename itself
survives a power loss. Readers that take a file's existence as "this step is done" (``summary.json``,
``compare.json``, checkpoints) rely on it. A writer killed midway leaves only a temp file named
``.<name>.tmp-<pid>`` (see :func:`remove_stale_temps`).

``durable=False`` keeps the atomic rename but skips both fsyncs (~8 ms per file on the development VM): for
bulk per-frame outputs that are cheap to regenerate (images, per-frame records), where a crash of the process
must not leave half a file but a power loss may lose the last files written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "atomic_open", "fsync_dir", "remove_stale_temps", "write_bytes_atomic", "write_json_atomic", "write_text_atomic",
]


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: Literal["wb", "w"] = "wb", *, durable: bool = True,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on a clean exit it replaces ``path`` atomically.

    For writers that need a file object (``torch.save``, ``np.savez``); the folder is created if missing. If the
    block raises, the temp file is removed and ``path`` keeps its old content.

    Args:
        path: the destination.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
        durable: fsync the file and the folder (see the module docstring).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', got {mode!r}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(p)
    try:
        with open(tmp, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(p.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb", durable=durable) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, durable: bool = True, **dumps: Any) -> Path:
    """Write ``obj`` as indented JSON plus a newline, atomically (``dumps``: more ``json.dumps`` options)."""
    return write_text_atomic(path, json.dumps(obj, **{"indent": 2, **dumps}) + "\n", durable=durable)


def remove_stale_temps(path: str | os.PathLike[str]) -> int:
    """Remove temp files that killed writers of ``path`` left behind; returns how many.

    Only safe where one process writes ``path`` at a time (e.g. one trainer per run folder).
    """
    p = Path(path)
    stale = list(p.parent.glob(f".{p.name}.tmp-*"))
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)
