"""``TeacherClient``: fetch teacher feature maps by frame id (used by trainers, tests and benchmarks).

Synchronous (one client per process or DataLoader worker; a client may also be shared by threads) with
keep-alive connections, batch requests, local decode, retries with capped exponential backoff for a bounded
time across server restarts and outages (one log line per outage, not one per retry), and an optional on-disk
cache of the stored chunk bytes. The connections are urllib3's pool (``shared.connections``: less client CPU per
batch than httpx, and the client's CPU is what bounds a trainer's fetch rate); no proxy settings are read from the
environment: the teacher service is reached directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.api import ServiceInfo, error_class
from shared.connections import ConnectionPool, Reply, TransportError
from shared.errors import DataError, FeatureServiceError, XModalError
from shared.features import (
    BATCH_MEDIA_TYPE,
    HEADER_SHAPE,
    VIEWS,
    FeatureEncoding,
    decode_batch,
    decode_chunk,
)
from shared.ids import validate_frame_id

__all__ = ["TeacherClient", "TeacherUnavailableError"]

log = logging.getLogger(__name__)
_RETRY_STATUS = {502, 503, 504}
_BATCH_HEADERS = {"Accept": BATCH_MEDIA_TYPE, "Content-Type": "application/json"}


class TeacherUnavailableError(XModalError):
    """The service stayed unreachable (or answered 502/503/504) for the client's whole ``wait``."""


def _raise_for(status: int, code: str, message: str) -> None:
    """Raise the table's exception for ``code`` (:data:`shared.api.API_ERRORS`), FeatureServiceError for others."""
    cls = error_class(code)
    if cls is None or cls.status != status:
        raise FeatureServiceError(status, code, message)
    raise cls(f"{message} [{status} {code}]")


def _view_query(view: str) -> str:
    """The query selecting a view (none for identity, so identity URLs stay what they always were)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {list(VIEWS)}")
    return "" if view == "identity" else f"?view={view}"


def _error_of(resp: Reply) -> tuple[str, str]:
    try:
        err = resp.json()["error"]
        return str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "http_error", resp.data[:200].decode("utf-8", "replace")


class TeacherClient:
    """Client of one teacher service.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        token: bearer token, when the server requires one.
        wait: seconds to keep retrying a request after its first failure by a connection error or 502/503/504
            (a server restarting or down), then :class:`TeacherUnavailableError`; 0 tries once. The pause
            between tries doubles from ``backoff`` seconds up to ``max_backoff``.
        wait_not_computed: also retry frames the server knows but has not computed yet.
        cache_dir: keep fetched chunk bytes here (file names are hashes, never frame ids).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        wait: float = 300.0,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        wait_not_computed: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._pool = ConnectionPool(self.base_url, timeout)
        self.wait, self.backoff, self.max_backoff = wait, backoff, max_backoff
        self.wait_not_computed = wait_not_computed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._info: ServiceInfo | None = None
        self._encoding: FeatureEncoding
        self.retried = 0  # requests repeated after a transient failure (for logs and tests)

    # -- plumbing ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
        delay, since = self.backoff, None  # since: monotonic time of this request's first failure
        headers = {**self._headers, **(headers or {})}
        while True:
            try:
                resp = self._pool.request(method, path, body, headers)
            except ssl.SSLCertVerificationError as e:  # not transient: retrying would only delay the message
                raise XModalError(f"teacher service {self.base_url}: its TLS certificate is not trusted "
                                  f"({e.verify_message}); name the CA bundle that signed it with SSL_CERT_FILE") \
                    from None
            except TransportError as e:
                problem: str = f"unreachable ({type(e).__name__}: {e})"
            else:
                transient = resp.status in _RETRY_STATUS
                if resp.status == 404 and self.wait_not_computed:
                    transient = _error_of(resp)[0] == "not_computed"
                if not transient:
                    if since is not None:
                        log.info("teacher service %s answers again after %.1f s", self.base_url,
                                 time.monotonic() - since)
                    return resp
                problem = f"unavailable (HTTP {resp.status})"
            now = time.monotonic()
            first_failure = since is None
            since = now if since is None else since
            left = self.wait - (now - since)
            if left <= 0:
                raise TeacherUnavailableError(
                    f"teacher service {self.base_url} {problem}; gave up after retrying for {now - since:.1f} s "
                    "(is `teacher-server serve` running there? a trainer's --teacher-wait sets how long to retry)")
            if first_failure:  # one line per outage; the retries themselves are debug-level
                log.warning("teacher service %s %s; retrying for up to %.0f s more", self.base_url, problem, left)
            else:
                log.debug("teacher service %s %s; retrying in %.2f s", self.base_url, problem, delay)
            self.retried += 1
            time.sleep(min(delay, left))
            delay = min(delay * 2, self.max_backoff)

    def _check(self, resp: Reply) -> Reply:
        if resp.status >= 400:
            code, message = _error_of(resp)
            _raise_for(resp.status, code, f"{message} (teacher service {self.base_url})")
        return resp

    def _decode(self, frame_id: str, data: bytes, shape: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """:func:`decode_chunk`, a failure naming the frame, the server and the teacher (damaged in storage or in
        transit: either way the frame is unusable and a trainer must say which)."""
        try:
            return decode_chunk(data, shape, self.encoding, out=out)
        except DataError as e:
            raise DataError(f"frame {frame_id!r} from teacher service {self.base_url} (teacher {self.teacher_id}) "
                            f"cannot be decoded: {e}") from None

    # -- API --------------------------------------------------------------------------------------
    def info(self, refresh: bool = False) -> ServiceInfo:
        """``GET /info`` (cached): teacher, encoding, collections, statistics, max_batch."""
        if self._info is None or refresh:
            info = ServiceInfo.model_validate(self._check(self._request("GET", "/info")).json())
            self._encoding = FeatureEncoding.from_dict(info.encoding)
            self._info = info
        return self._info

    @property
    def encoding(self) -> FeatureEncoding:
        """The served chunks' encoding (parsed once per ``/info``: it is consulted per decoded frame)."""
        self.info()
        return self._encoding

    @property
    def teacher_id(self) -> str:
        return self.info().teacher_id

    def healthy(self) -> bool:
        """True when ``/healthz`` answers 200 within 2 s (one try, on a connection of its own)."""
        probe = ConnectionPool(self.base_url, timeout=2.0, max_idle=1)
        try:
            return probe.request("GET", "/healthz").status == 200
        except TransportError:
            return False
        finally:
            probe.close()

    def get(self, frame_id: str, view: str = "identity") -> np.ndarray:
        """One frame's map, float32 (C, H, W); ``view="mirror"``: the teacher's map of the mirrored frame."""
        validate_frame_id(frame_id)
        cached = self._cache_get(frame_id, view)
        if cached is not None:
            return cached
        resp = self._check(self._request("GET", f"/features/{frame_id}" + _view_query(view)))
        shape = tuple(int(v) for v in resp.headers[HEADER_SHAPE].split(","))
        arr = self._decode(frame_id, resp.data, shape)
        self._cache_put(frame_id, view, resp.data, shape)  # only bytes that decoded
        return arr

    def get_npy(self, frame_id: str, view: str = "identity") -> np.ndarray:
        """One frame's map through the server-decoded ``.npy`` form."""
        validate_frame_id(frame_id)
        query = "?format=npy" + _view_query(view).replace("?", "&")
        resp = self._check(self._request("GET", f"/features/{frame_id}{query}"))
        return np.load(io.BytesIO(resp.data), allow_pickle=False)

    def get_many(self, frame_ids: Sequence[str], views: Sequence[str] | None = None) -> np.ndarray:
        """Maps of many frames of one shape, stacked float32 (N, C, H, W), in the order given (``views[k]`` of
        frame k: identity or mirror; default identity).

        Uses batch requests of at most the server's ``max_batch`` and decodes each map straight into its row of
        the result; any unavailable frame raises.
        """
        ids = [validate_frame_id(f) for f in frame_ids]
        if not ids:
            raise ValueError("get_many needs at least one frame id")
        if views is not None and len(views) != len(ids):
            raise ValueError(f"get_many needs one view per id ({len(ids)} ids, {len(views)} views)")
        keys = list(zip(ids, views or ["identity"] * len(ids), strict=True))
        rows: dict[tuple[str, str], list[int]] = {}  # (id, view) -> its positions in the result (may repeat)
        for k, key in enumerate(keys):
            rows.setdefault(key, []).append(k)
        out: np.ndarray | None = None

        def fill(key: tuple[str, str], shape: tuple[int, ...]) -> np.ndarray:
            """The key's first row of the result (allocated with the first shape seen); later rows are copied from
            it by :func:`repeat`."""
            nonlocal out
            if out is None:
                out = np.empty((len(keys), *shape), dtype=np.float32)
            return out[rows[key][0]]

        def repeat(key: tuple[str, str]) -> None:
            first, *rest = rows.pop(key)
            for k in rest:
                out[k] = out[first]  # type: ignore[index]

        missing = []
        for key in list(rows):
            hit = self._cache_get(*key)
            if hit is None:
                missing.append(key)
            else:
                fill(key, hit.shape)[...] = hit
                repeat(key)
        step = self.info().max_batch
        for i in range(0, len(missing), step):
            part = missing[i : i + step]
            request: dict[str, Any] = {"ids": [fid for fid, _ in part], "strict": False}
            if any(view != "identity" for _, view in part):
                request["views"] = [view for _, view in part]
            resp = self._check(self._request("POST", "/features/batch", json.dumps(request).encode(), _BATCH_HEADERS))
            entries = decode_batch(resp.data)
            if [e.id for e in entries] != request["ids"]:
                raise DataError(f"teacher service {self.base_url}: the batch response lists other frames than "
                                f"asked for ({len(entries)} entries for {len(part)} ids)")
            for key, entry in zip(part, entries, strict=True):
                if entry.status != 200:
                    _raise_for(entry.status, entry.code or "error",
                               f"{entry.message or ''} (teacher service {self.base_url})")
                shape = entry.shape or ()
                self._decode(entry.id, entry.data, shape, out=fill(key, shape))
                self._cache_put(*key, entry.data, shape)
                repeat(key)
        assert out is not None and not rows
        return out

    # -- on-disk cache ----------------------------------------------------------------------------
    def _cache_path(self, frame_id: str, view: str) -> Path | None:
        if self.cache_dir is None:
            return None
        name = frame_id if view == "identity" else f"{frame_id}\0{view}"
        digest = hashlib.sha256(f"{self.teacher_id}\0{name}".encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.chunk"

    def _cache_get(self, frame_id: str, view: str = "identity") -> np.ndarray | None:
        path = self._cache_path(frame_id, view)
        if path is None or not path.is_file():
            return None
        blob = path.read_bytes()
        ndim = blob[0]
        shape = tuple(int(v) for v in np.frombuffer(blob[1 : 1 + 4 * ndim], dtype="<u4"))
        try:
            return decode_chunk(blob[1 + 4 * ndim :], shape, self.encoding)
        except DataError:
            path.unlink(missing_ok=True)  # a damaged cache entry is refetched, never trusted
            return None

    def _cache_put(self, frame_id: str, view: str, data: bytes, shape: tuple[int, ...]) -> None:
        path = self._cache_path(frame_id, view)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(bytes([len(shape)]) + np.asarray(shape, dtype="<u4").tobytes() + data)
        os.replace(tmp, path)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> TeacherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
