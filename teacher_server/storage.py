"""Where a feature store lives: a local folder or an S3 prefix, and byte access to its objects by key.

``StoreLocation.parse`` turns ``--store`` text into a location; :func:`open_objects` gives the two things
every store user needs from it: zarr's own store adapter (``LocalStore`` here, ``ObjectStore`` over obstore's
``S3Store`` in ``storage_s3.py``) for metadata and whole-shard writes, and :class:`StoreObjects`, which knows
keys and bytes only: the serving hot path's ranged reads (``os.pread`` locally, one ranged GET on S3), removal,
durability, size and the writers' lock. The Zarr layout and the shard index format stay in ``store.py`` and
``reader.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zarr.abc.store import Store
from zarr.storage import LocalStore

from shared.errors import ConfigError

__all__ = ["Blob", "StaleBlobError", "StoreLocation", "StoreObjects", "open_objects", "store_lock"]


class StaleBlobError(Exception):
    """The object was replaced (e.g. by ``precompute --repair``) since it was opened; open it again."""


@dataclass(frozen=True)
class StoreLocation:
    """A store's place: a local folder (``path``) or ``s3://bucket/prefix`` (``bucket``, ``prefix``)."""

    url: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> StoreLocation:
        """Parse a local path or ``s3://bucket[/prefix]``. Raises ConfigError for other URL schemes."""
        text = os.fspath(text)
        scheme, sep, rest = text.partition("://")
        if not sep:
            return cls(url=text, path=Path(text))
        if scheme != "s3":
            raise ConfigError(f"store {text!r}: only local paths and s3://bucket/prefix URLs are supported")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"store {text!r} names no bucket (expected s3://bucket/prefix)")
        prefix = prefix.strip("/")
        return cls(url=f"s3://{bucket}/{prefix}".rstrip("/"), bucket=bucket, prefix=prefix)

    def __str__(self) -> str:
        return self.url


class Blob(ABC):
    """One opened object (a shard): its size at opening and ranged reads of that version."""

    size: int

    @abstractmethod
    def read(self, offset: int, nbytes: int) -> bytes:
        """``nbytes`` at ``offset``. Raises StaleBlobError when the object changed since it was opened."""

    @abstractmethod
    def is_current(self) -> bool:
        """False when the object was replaced since opening (checked per read where that is free)."""

    def close(self) -> None:
        """Release what the blob holds (a file descriptor)."""
        return None


class StoreObjects(ABC):
    """Keys and bytes of one store: what the reader and the shard writer need beyond zarr's own API."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location

    def describe(self, key: str) -> str:
        """The object's full name for messages (a path or an ``s3://`` URL)."""
        return f"{self.location.url.rstrip('/')}/{key}"

    @abstractmethod
    def open_tail(self, key: str, nbytes: int) -> tuple[Blob, bytes]:
        """Open an object and read its last ``nbytes`` (all of it when smaller). Raises FileNotFoundError."""

    @abstractmethod
    def remove(self, key: str) -> None:
        """Delete the object if it exists (locally also a folder found where the object belongs)."""

    @abstractmethod
    def make_durable(self, key: str) -> None:
        """Return once the object survives a crash (fsync locally; an S3 PUT is durable when it returns)."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Stored bytes of the object."""

    @abstractmethod
    def discard_partials(self, key: str) -> None:
        """Delete what a killed write of ``key`` left behind (zarr's local temp files; nothing on S3)."""

    @abstractmethod
    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises store creation and attribute updates between writers where the backend can."""


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


class _LocalObjects(StoreObjects):
    def __init__(self, location: StoreLocation) -> None:
        super().__init__(location)
        self.root: Path = location.path  # type: ignore[assignment]

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
        return store_lock(self.root)


@contextlib.contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """Serialise store creation between workers started at the same time (local filesystems)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".create.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_objects(location: StoreLocation, read_only: bool) -> tuple[Store, StoreObjects]:
    """zarr's store adapter for ``location`` plus byte access to its objects.

    Raises:
        DataError: the S3 bucket does not exist or cannot be listed with the given credentials.
        ConfigError: an s3:// location without the ``s3`` extra installed.
    """
    if location.path is not None:
        return LocalStore(location.path, read_only=read_only), _LocalObjects(location)
    try:
        from teacher_server.storage_s3 import open_s3
    except ImportError as e:
        raise ConfigError(f"store {location}: s3:// stores need obstore ({e}); install the 's3' extra: "
                          "pip install 'xmodal-distill[s3]'") from None
    return open_s3(location, read_only)

