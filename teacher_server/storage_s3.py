"""S3 (and S3-compatible) feature stores: zarr's ``ObjectStore`` over obstore, plus ranged object reads.

obstore rather than fsspec/s3fs: both work with zarr 3.1 here, but obstore gives a synchronous ranged GET with
no event-loop hop on the serving hot path, conditional reads (``If-Match``) that detect a replaced shard with no
extra request, typed errors (``PreconditionError``, ``FileNotFoundError``), retries with backoff built in, and
no aiobotocore/botocore pins. Settings come from the standard environment variables, read by obstore itself
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``), plus
``AWS_ENDPOINT_URL_S3`` (preferred) or ``AWS_ENDPOINT_URL`` for S3-compatible servers (``http://`` allowed there).

Writers hold no lock on S3: each ``--worker i/n`` owns whole shards, and every object a shard writes (its
features shard, its ``shard_stats`` row, its ``done`` chunk) belongs to that shard alone, so no two writers
ever PUT the same shard object; S3's strong read-after-write consistency makes the write order (shard, then
statistics, then done bits) hold for readers as it does on a local disk.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import obstore
from obstore.exceptions import BaseError, PreconditionError
from obstore.store import S3Store
from zarr.abc.store import Store
from zarr.storage import ObjectStore

from shared.errors import ConfigError, DataError
from teacher_server.storage import Blob, StaleBlobError, StoreLocation, StoreObjects

__all__ = ["S3Objects"]


@dataclass
class _ObjectBlob(Blob):
    store: S3Store
    key: str
    etag: str
    size: int

    def read(self, offset: int, nbytes: int) -> bytes:
        """One ranged GET, conditional on the ETag seen at opening (a replaced shard answers 412)."""
        try:
            result = obstore.get(self.store, self.key, options={"range": (offset, offset + nbytes),
                                                                "if_match": self.etag})
        except PreconditionError:
            raise StaleBlobError(self.key) from None
        return bytes(result.bytes())

    def is_current(self) -> bool:
        return True  # checked by the conditional GET of every read instead of a HEAD per frame


class S3Objects(StoreObjects):
    """Objects of a store under ``s3://bucket/prefix``: key ``a/b`` is the object ``prefix/a/b``."""

    reads_are_local = False

    def __init__(self, location: StoreLocation, s3: S3Store) -> None:
        super().__init__(location)
        self.s3 = s3

    @classmethod
    def locate(cls, scheme: str, rest: str, text: str) -> StoreLocation:
        """``s3://bucket[/prefix]``, the prefix without leading or trailing slashes."""
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"store {text!r} names no bucket (expected s3://bucket/prefix)")
        root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
        return StoreLocation(scheme="s3", url=f"s3://{root}", root=root)

    @classmethod
    def open(cls, location: StoreLocation, read_only: bool) -> tuple[Store, StoreObjects]:
        """zarr's ObjectStore and byte access; one LIST first, so a bad bucket fails here with a DataError."""
        s3 = _s3_store(location)
        _check_bucket(location, s3)
        return ObjectStore(s3, read_only=read_only), cls(location, s3)

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self.s3, key)
        except FileNotFoundError:
            return False
        return True

    def open_tail(self, key: str, nbytes: int) -> tuple[Blob, bytes]:
        result = obstore.get(self.s3, key, options={"range": {"suffix": nbytes}})
        meta = result.meta
        return _ObjectBlob(self.s3, key, str(meta["e_tag"]), int(meta["size"])), bytes(result.bytes())

    def remove(self, key: str) -> None:
        obstore.delete(self.s3, key)  # S3 deletes of missing keys succeed

    def make_durable(self, key: str) -> None:
        return None  # an S3 PUT returns after the object is stored durably

    def size(self, key: str) -> int:
        return int(obstore.head(self.s3, key)["size"])

    def discard_partials(self, key: str) -> None:
        return None  # a PUT is atomic; an interrupted multipart upload never becomes visible

    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        # No lock on object storage: workers own whole shards, creation is idempotent (see FeatureStore).
        return contextlib.nullcontext()


def _bucket_prefix(location: StoreLocation) -> tuple[str, str]:
    bucket, _, prefix = location.root.partition("/")
    return bucket, prefix


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_store(location: StoreLocation) -> S3Store:
    """obstore's S3 client for the location; credentials and region from the AWS_* environment."""
    endpoint = _endpoint()
    config = {"endpoint": endpoint} if endpoint else {}
    client = {"allow_http": True} if endpoint and endpoint.startswith("http://") else {}
    bucket, prefix = _bucket_prefix(location)
    return S3Store(bucket, prefix=prefix or None, config=config, client_options=client)


def _check_bucket(location: StoreLocation, s3: S3Store) -> None:
    """One LIST request, so a missing bucket or refused credentials fail with a clear message up front."""
    try:
        obstore.list_with_delimiter(s3)
    except (BaseError, OSError) as e:  # GenericError, PermissionError, ... carrying the server's XML
        endpoint, bucket = _endpoint() or "AWS S3", _bucket_prefix(location)[0]
        if "NoSuchBucket" in str(e):
            raise DataError(f"store {location}: bucket {bucket!r} does not exist at {endpoint} "
                            "(create it first; precompute does not create buckets)") from None
        first = str(e).splitlines()[0][:300]
        raise DataError(f"store {location}: cannot list bucket {bucket!r} at {endpoint}: {first} "
                        "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION)") from None
