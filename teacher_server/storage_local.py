"""Local feature stores (a folder, or a ``file:///`` URL): zarr's ``LocalStore`` plus ``os.pread`` ranged reads.

A shard opened for reading keeps its file open and remembers its inode and size: zarr writes every object to a
temp file and renames it into place, so a replaced shard has a new inode and :meth:`_LocalBlob.is_current` sees
it with one ``stat``. Writers take a ``flock`` on ``<store>/.create.lock`` while creating the store or updating
group attributes (several ``--worker`` processes started at once on one filesystem).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from zarr.abc.store import Store
from zarr.storage import LocalStore

from shared.errors import ConfigError
from teacher_server.storage import Blob, StoreLocation, StoreObjects

__all__ = ["LocalObjects"]


@dataclass
class _LocalBlob(Blob):
    path: Path
    # A file object, not a bare fd: a blob the reader's cache dropped may still be read by another thread, and
    # the file closes only when its last holder lets go — a closed fd number could be reused by another shard.
    file: io.FileIO
    ino: int
    size: int

    def read(self, offset: int, nbytes: int) -> bytes:
        return os.pread(self.file.fileno(), nbytes, offset)

    def is_current(self) -> bool:
        st = os.stat(self.path)  # FileNotFoundError when the shard vanished
        return st.st_ino == self.ino and st.st_size == self.size

    def close(self) -> None:
        self.file.close()


class LocalObjects(StoreObjects):
    """Objects of a store in a local folder: key ``a/b`` is the file ``<folder>/a/b``."""

    reads_are_local = True

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        self.root = Path(location.root)

    @classmethod
    def locate(cls, scheme: str, rest: str, text: str) -> StoreLocation:
        """A plain path as given, or ``file:///absolute/folder`` (percent-escapes decoded) as that path."""
        if scheme == "file":
            if not rest.startswith("/"):
                raise ConfigError(f"store {text!r}: expected file:///absolute/folder (a file URL names no host)")
            rest = unquote(rest)
        return StoreLocation(scheme="", url=rest, root=rest)

    @classmethod
    def open(cls, location: StoreLocation, read_only: bool) -> tuple[Store, StoreObjects]:
        """zarr's LocalStore (which creates the folder on its first write, not here) and byte access."""
        return LocalStore(location.root, read_only=read_only), cls(location)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def open_tail(self, key: str, nbytes: int) -> tuple[Blob, bytes]:
        path = self.root / key
        file = io.FileIO(path, "r")
        st = os.fstat(file.fileno())
        start = max(0, st.st_size - nbytes)
        return _LocalBlob(path, file, st.st_ino, st.st_size), os.pread(file.fileno(), st.st_size - start, start)

    def remove(self, key: str) -> None:
        path = self.root / key
        if path.is_dir() and not path.is_symlink():  # damage: a folder where a shard or chunk file belongs
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def make_durable(self, key: str) -> None:
        """fsync the file and its folder so the rename that created it survives a power loss."""
        path = self.root / key
        for target in (path, path.parent):
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def size(self, key: str) -> int:
        return (self.root / key).stat().st_size

    def discard_partials(self, key: str) -> None:
        path = self.root / key
        for stale in path.parent.glob(f"{path.stem}.*.partial"):  # zarr's LocalStore: <name>.<uuid>.partial
            stale.unlink(missing_ok=True)

    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        return _store_lock(self.root)


@contextlib.contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    """Serialise store creation between workers started at the same time (local filesystems)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".create.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
