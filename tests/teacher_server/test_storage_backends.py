"""Every storage backend runs the conformance suite; plus the registry (schemes, extras, import isolation)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from shared.errors import ConfigError
from teacher_server.settings import ServeSettings
from teacher_server.storage import BACKENDS, StoreLocation, StoreObjects, backend_for, open_objects
from teacher_server.store import FeatureStore
from tests.servers import REPO, moto_s3
from tests.teacher_server.storage_conformance import DATA, KEY, StorageConformance

BUCKET = "xmodal-conformance"


class TestLocalBackend(StorageConformance):
    reads_are_local = True

    @pytest.fixture
    def location(self, tmp_path) -> StoreLocation:
        return StoreLocation.parse(tmp_path / "store")

    def put(self, location, key, data):
        path = Path(location.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")  # as zarr's LocalStore writes: temp, then rename
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def stored(self, location, key):
        path = Path(location.root, key)
        return path.read_bytes() if path.is_file() else None

    def read_named(self, name):
        return Path(name).read_bytes()

    def is_empty(self, location):
        return not Path(location.root).exists()

    def leave_partial(self, location, key):
        partial = Path(key).with_suffix(f".{uuid.uuid4().hex}.partial").as_posix()
        Path(location.root, partial).write_bytes(b"half a shard")
        return partial

    def test_remove_takes_a_folder_where_a_file_belongs(self, location, objects):
        folder = Path(location.root, KEY)
        (folder / "inner").mkdir(parents=True)
        (folder / "inner" / "junk").write_bytes(b"x")
        objects.remove(KEY)
        assert not folder.exists() and folder.parent.is_dir()

    def test_make_durable_fsyncs_the_file_and_its_folder(self, location, objects, monkeypatch):
        self.put(location, KEY, DATA)
        synced, real = [], os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
        objects.make_durable(KEY)
        path = Path(location.root, KEY)
        assert synced == [path.stat().st_ino, path.parent.stat().st_ino]

    def test_writer_lock_excludes_other_writers(self, location, objects):
        with objects.writer_lock(), open(Path(location.root, ".create.lock"), "w") as other, \
                pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with open(Path(location.root, ".create.lock"), "w") as other:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit


class TestS3Backend(StorageConformance):
    """Against moto's S3 server on loopback (skipped when obstore or moto is not installed)."""

    reads_are_local = False

    @pytest.fixture(scope="class")
    @classmethod
    def s3(cls) -> Iterator[None]:
        """moto for the whole class; ``cls.client`` is boto3's S3 client for the raw hooks."""
        pytest.importorskip("obstore")
        pytest.importorskip("moto")
        boto3 = pytest.importorskip("boto3")
        with moto_s3(BUCKET):
            cls.client = boto3.client("s3")
            yield

    @pytest.fixture
    def location(self, s3) -> StoreLocation:
        return StoreLocation.parse(f"s3://{BUCKET}/conformance/{uuid.uuid4().hex[:12]}")

    @staticmethod
    def _object_key(location, key):
        return f"{location.root.partition('/')[2]}/{key}"

    def put(self, location, key, data):
        self.client.put_object(Bucket=BUCKET, Key=self._object_key(location, key), Body=data)

    def stored(self, location, key):
        try:
            return self.client.get_object(Bucket=BUCKET, Key=self._object_key(location, key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def read_named(self, name):
        bucket, _, key = name.removeprefix("s3://").partition("/")
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def is_empty(self, location):
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=self._object_key(location, ""))
        return listed["KeyCount"] == 0

    def leave_partial(self, location, key):
        return None  # a PUT is atomic and an unfinished multipart upload lists no object


# --- the registry


@pytest.mark.parametrize("scheme", sorted(BACKENDS))
def test_every_registered_scheme_resolves_to_a_backend(scheme):
    if BACKENDS[scheme].extra is not None:
        pytest.importorskip("obstore")
    cls = backend_for(scheme)
    assert issubclass(cls, StoreObjects) and isinstance(cls.reads_are_local, bool)


def test_unknown_scheme_lists_the_supported_forms():
    with pytest.raises(ConfigError, match=r"store 'gs://b/p': no storage backend for URL scheme 'gs'; supported: "
                                          r"a local folder, file:///absolute/folder, s3://bucket/prefix"):
        StoreLocation.parse("gs://b/p")
    with pytest.raises(ConfigError, match="no storage backend for URL scheme 'gs'"):
        FeatureStore.open("gs://b/p")


def test_s3_urls_are_canonical_and_need_a_bucket():
    pytest.importorskip("obstore")
    assert StoreLocation.parse("S3://bucket//a/b/").url == "s3://bucket/a/b"
    assert StoreLocation.parse("s3://bucket").root == "bucket"
    with pytest.raises(ConfigError, match=r"names no bucket \(expected s3://bucket/prefix\)"):
        StoreLocation.parse("s3:///prefix")


def test_file_urls_are_local_folders(tmp_path):
    folder = tmp_path / "a store"
    assert StoreLocation.parse(f"file://{quote(str(folder))}") == StoreLocation.parse(folder)
    with pytest.raises(ConfigError, match="expected file:///absolute/folder"):
        StoreLocation.parse("file://host/share/store")


def test_s3_without_obstore_says_to_install_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "obstore", None)  # import obstore now raises ImportError
    monkeypatch.delitem(sys.modules, "teacher_server.storage_s3", raising=False)
    hint = r"s3:// stores need obstore .*install the 's3' extra: pip install 'xmodal-distill\[s3\]'"
    with pytest.raises(ConfigError, match=hint):
        StoreLocation.parse("s3://bucket/store")
    with pytest.raises(ConfigError, match=hint):
        FeatureStore.open("s3://bucket/store")
    assert open_objects(StoreLocation.parse(tmp_path), read_only=True)[1].reads_are_local  # local still works


def test_backend_modules_load_only_when_named():
    """storage.py imports no backend; the local and S3 modules never import each other."""
    code = ("import sys, teacher_server.storage as s, teacher_server.store, teacher_server.reader\n"
            "assert not {'teacher_server.storage_local', 'teacher_server.storage_s3', 'obstore'} & set(sys.modules)\n"
            "s.StoreLocation.parse('/tmp/x')\n"
            "assert 'teacher_server.storage_local' in sys.modules and 'teacher_server.storage_s3' not in sys.modules\n"
            "try:\n    import obstore\nexcept ImportError:\n    raise SystemExit(0)\n"
            "del sys.modules['teacher_server.storage_local']\n"
            "import teacher_server.storage_s3\n"
            "assert 'teacher_server.storage_local' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_settings_take_any_registered_scheme_in_canonical_form(tmp_path):
    """``--stores`` is checked against the registry at start-up; what the settings hold parses back the same."""
    s = ServeSettings(stores=f"{tmp_path / 'a'},file://{tmp_path / 'b'}")
    assert s.stores == [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(ValidationError, match="no storage backend for URL scheme 'gs'"):
        ServeSettings(stores=["gs://bucket/store"])
