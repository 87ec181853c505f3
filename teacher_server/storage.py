"""Where a feature store lives, and byte access to its objects by key: the interface and the backend registry.

``StoreLocation.parse`` turns ``--store`` text into a location, choosing the backend by the URL's scheme
(:data:`BACKENDS`: a plain path or ``file://`` is a local folder, ``s3://`` an S3 prefix); :func:`open_objects`
gives the two things every store user needs from it: zarr's own store adapter for metadata and whole-shard writes,
and :class:`StoreObjects`, which knows keys and bytes only: the serving hot path's ranged reads, existence, removal,
durability, size and the writers' lock. The Zarr layout and the shard index format stay in ``store.py`` and
``reader.py``; no caller asks which backend it has, only what the backend declares (``reads_are_local``,
``writer_lock``, ``exists``).

Adding a backend is one new module and one registry line: the module defines a :class:`StoreObjects` subclass
(its ``locate`` parses the URL, its ``open`` returns zarr's adapter and an instance; it may import this module,
never another backend), and :data:`BACKENDS` maps the URL scheme to it. The module is imported the first time a
URL names its scheme, so its dependencies stay optional. ``tests/teacher_server/storage_conformance.py`` is the
suite every backend's tests subclass.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from zarr.abc.store import Store

from shared.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "Blob", "StaleBlobError", "StoreLocation", "StoreObjects", "backend_for",
           "open_objects"]


class StaleBlobError(Exception):
    """The object was replaced (e.g. by ``precompute --repair``) since it was opened; open it again."""


@dataclass(frozen=True)
class Backend:
    """A registered backend: its :class:`StoreObjects` class as ``"module:Class"`` (imported on first use), the
    URL form shown in messages, and the pip extra that installs its dependencies (None: always installed)."""

    target: str
    form: str
    extra: str | None = None


BACKENDS: dict[str, Backend] = {
    "": Backend("teacher_server.storage_local:LocalObjects", "a local folder"),
    "file": Backend("teacher_server.storage_local:LocalObjects", "file:///absolute/folder"),
    "s3": Backend("teacher_server.storage_s3:S3Objects", "s3://bucket/prefix", extra="s3"),
}


def backend_for(scheme: str, text: str = "") -> type[StoreObjects]:
    """The backend class registered for URL ``scheme`` (``""``: a plain path), importing its module.

    Args:
        scheme: lower-case URL scheme, without ``://``.
        text: the store text being parsed, for messages.

    Raises:
        ConfigError: no backend for ``scheme`` (the message lists the known forms), or its module's dependencies
            are not installed (the message names the pip extra).
    """
    entry = BACKENDS.get(scheme)
    if entry is None:
        known = ", ".join(b.form for b in BACKENDS.values())
        raise ConfigError(f"store {text!r}: no storage backend for URL scheme {scheme!r}; supported: {known}")
    module, _, name = entry.target.partition(":")
    try:
        cls: type[StoreObjects] = getattr(importlib.import_module(module), name)
    except ImportError as e:
        if entry.extra is None:
            raise
        raise ConfigError(f"store {text!r}: {scheme}:// stores need {e.name or 'more packages'} ({e}); install "
                          f"the {entry.extra!r} extra: pip install 'xmodal-distill[{entry.extra}]'") from None
    return cls


@dataclass(frozen=True)
class StoreLocation:
    """A store's place: ``scheme`` selects its backend in :data:`BACKENDS`, ``url`` is its canonical text (messages
    and settings show it; parsing it again gives this location), ``root`` what the backend addresses (a folder
    path; ``bucket/prefix`` on S3)."""

    scheme: str
    url: str
    root: str

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> StoreLocation:
        """Parse a local path or a ``scheme://...`` URL of a registered backend.

        Raises:
            ConfigError: an unknown scheme, a malformed URL, or a backend whose extra is not installed.
        """
        text = os.fspath(text)
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        scheme = scheme.lower()
        return backend_for(scheme, text).locate(scheme, rest, text)

    def __str__(self) -> str:
        return self.url


class Blob(ABC):
    """One opened object (a shard): its size at opening and ranged reads of that version."""

    size: int

    @abstractmethod
    def read(self, offset: int, nbytes: int) -> bytes:
        """``nbytes`` at ``offset``. Raises StaleBlobError when the object changed since it was opened (where the
        backend detects that per read) and FileNotFoundError when it was deleted."""

    @abstractmethod
    def is_current(self) -> bool:
        """False when the object was replaced since opening (backends that check per read answer True)."""

    def close(self) -> None:
        """Release what the blob holds (a file descriptor)."""
        return None


class StoreObjects(ABC):
    """Keys and bytes of one store: what the reader and the shard writer need beyond zarr's own API.

    Keys are ``/``-separated paths under the store's root, e.g. ``tiny/features/c/3/0/0/0``.
    """

    reads_are_local: ClassVar[bool]
    """True when a ranged read is a local system call of microseconds, cheap enough for the server's event loop;
    False for network reads, which belong in a worker thread."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location

    @classmethod
    @abstractmethod
    def locate(cls, scheme: str, rest: str, text: str) -> StoreLocation:
        """The location ``text`` names (``rest``: what follows ``scheme://``, or the whole of a plain path).

        Raises:
            ConfigError: a URL this backend cannot address (naming the form expected).
        """

    @classmethod
    @abstractmethod
    def open(cls, location: StoreLocation, read_only: bool) -> tuple[Store, StoreObjects]:
        """zarr's store adapter for ``location`` plus byte access to its objects; creates nothing.

        Raises:
            DataError: the backend's container (an S3 bucket) is missing or refuses access.
        """

    def describe(self, key: str) -> str:
        """The object's full name for messages (a path or an ``s3://`` URL)."""
        return f"{self.location.url.rstrip('/')}/{key}"

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when an object is stored at ``key`` (how a missing store is told apart before zarr opens it)."""

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
        """Stored bytes of the object. Raises FileNotFoundError."""

    @abstractmethod
    def discard_partials(self, key: str) -> None:
        """Delete what a killed write of ``key`` left behind (zarr's local temp files; nothing on S3)."""

    @abstractmethod
    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialises store creation and attribute updates between writers where the backend needs it (a file
        lock locally; a no-op where writers own disjoint objects and creation is idempotent)."""


def open_objects(location: StoreLocation, read_only: bool) -> tuple[Store, StoreObjects]:
    """zarr's store adapter for ``location`` plus byte access to its objects, from the location's backend.

    Raises:
        DataError: the S3 bucket does not exist or cannot be listed with the given credentials.
        ConfigError: the backend's extra is not installed.
    """
    return backend_for(location.scheme, location.url).open(location, read_only)
