"""Feature maps by frame id: one (stored bytes or .npy) or many (binary batch framing)."""

from __future__ import annotations

import asyncio
import functools
import io
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.convertors import Convertor, register_url_convertor

from shared.errors import (
    ApiError,
    BatchTooLargeError,
    CorruptFeatureError,
    DataError,
    InvalidRequestError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from shared.features import (
    BATCH_MEDIA_TYPE,
    HEADER_CODEC,
    HEADER_DTYPE,
    HEADER_SHAPE,
    HEADER_TEACHER,
    NPY_MEDIA_TYPE,
    BatchEntry,
    decode_chunk,
    encode_batch,
)
from teacher_server.deps import MetricsDep, ReaderDep, SettingsDep, require_token
from teacher_server.http_semantics import (
    etag_matches,
    is_json,
    negotiate,
    representation_etag,
)
from teacher_server.reader import ChunkReader, FrameChunk, FrameError


class _FrameSegment(Convertor[str]):
    """A path segment naming a frame: any but ``batch``, so ``GET /features/batch`` is the batch route's 405
    (``Allow: POST``) rather than a lookup of a frame called "batch" (such a frame is served by batch only)."""

    regex = "(?!batch$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("frame_segment", _FrameSegment())
router = APIRouter(prefix="/features", tags=["features"], dependencies=[Depends(require_token)])

A = TypeVar("A")
R = TypeVar("R")
CHUNK_MEDIA_TYPE = "application/octet-stream"
_OFFERS = (CHUNK_MEDIA_TYPE, NPY_MEDIA_TYPE)  # what Accept chooses between; the stored bytes by default
_DESCRIPTION_CHUNK = (
    "Default body: the frame's stored chunk exactly as in the Zarr store — the (C, H, W) map as "
    "little-endian `X-Feature-Dtype`, compressed with Zstandard (frame checksum on). Decode: "
    "`np.frombuffer(zstd.decompress(body), '<f4' or '<f2').reshape(shape)`; quantised encodings (`X-Feature-Codec` "
    "has `quantize=BITS`): per-channel steps + integer codes, `shared.features.decode_chunk` (layout in "
    "`shared/quantize.py`). With `?format=npy`, or an "
    "`Accept` header that prefers `application/x-npy` (q-values honoured): a plain float32 `.npy` file, with "
    "its own ETag. Without `?format` the answer depends on `Accept` (`Vary: Accept`). `If-None-Match` "
    "(weak comparison, `*` included) answers 304. `?view=mirror`: the teacher's map of the mirrored frame (stores "
    "precomputed with that view; see `/info`)."
)
_DESCRIPTION_BATCH = (
    "Body `{\"ids\": [...], \"views\": [...] (optional, one per id: identity | mirror), \"strict\": false}` "
    "as `Content-Type: application/json` (415 otherwise; `strict` a "
    "JSON boolean). Response `application/x-xmodal-batch`: "
    "`b'XMB1' | uint32 LE n | n bytes JSON {\"frames\": [{id, status, offset, length, shape, etag | code, message}]} "
    "| payload`, each entry's chunk at payload[offset:offset+length] in the encoding of the response headers. "
    "Unknown or not-yet-computed frames get their own status unless `strict` is true, which fails the request."
)


View = Literal["identity", "mirror"]  # shared.features.VIEWS


class BatchRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # "strict": "yes" or 1 is a mistake to report, not a true

    ids: list[str] = Field(description="frame ids, at most the server's max_batch (see /info)")
    views: list[View] | None = Field(None, description="the view of each id (default: identity for all)")
    strict: bool = Field(False, description="fail the whole request when any frame is unavailable")

    @model_validator(mode="after")
    def _one_view_per_id(self) -> BatchRequest:
        if self.views is not None and len(self.views) != len(self.ids):
            raise ValueError(f"views must name one view per id: {len(self.ids)} ids, {len(self.views)} views")
        return self


def _encoding_headers(reader: ChunkReader, chunk_shape: tuple[int, ...] | None) -> dict[str, str]:
    store = reader.stores[0]
    headers = {
        HEADER_DTYPE: store.encoding.dtype,
        HEADER_CODEC: store.encoding.header(),
        HEADER_TEACHER: store.teacher.short_id(),
    }
    if chunk_shape is not None:
        headers[HEADER_SHAPE] = ",".join(str(v) for v in chunk_shape)
    return headers


def _wants_npy(format: str | None, accept: str | None) -> bool:
    if format is not None:
        return format == "npy"
    return accept is not None and negotiate(accept, _OFFERS) == NPY_MEDIA_TYPE


@router.get(
    "/{frame_id:frame_segment}",
    response_class=Response,
    description=_DESCRIPTION_CHUNK,
    responses={200: {"content": {CHUNK_MEDIA_TYPE: {}, NPY_MEDIA_TYPE: {}}}, 304: {"description": "ETag matched"}},
)
async def get_feature(
    frame_id: str,
    request: Request,
    reader: ReaderDep,
    metrics: MetricsDep,
    format: Annotated[str | None, Query(pattern="^(raw|npy)$", description="raw (default) or npy")] = None,
    view: Annotated[View, Query(description="identity (default) or mirror: the map of the mirrored frame")] = (
        "identity"),
    accept: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One frame's teacher pool5 map."""
    chunk = await _off_loop(reader, functools.partial(reader.read, view=view), frame_id)
    npy = _wants_npy(format, accept)
    headers = {**_encoding_headers(reader, chunk.shape), "Cache-Control": request.app.state.settings.cache_control}
    if format is None:
        headers["Vary"] = "Accept"
    if npy:
        headers.update({"ETag": representation_etag(chunk.etag, "npy"), HEADER_DTYPE: "float32"})
        del headers[HEADER_CODEC]  # a plain .npy file
    else:
        headers["ETag"] = chunk.etag
    if if_none_match is not None and etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    metrics.frames.labels("/features/{frame_id}").inc()
    if npy:
        try:
            arr = decode_chunk(chunk.data, chunk.shape, reader.stores[0].encoding)
        except DataError as e:  # a version-1 chunk (no CRC) damaged in storage shows only here
            raise CorruptFeatureError(f"frame {frame_id!r}: {e}") from None
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return Response(buf.getvalue(), media_type=NPY_MEDIA_TYPE, headers=headers)
    return Response(chunk.data, media_type=CHUNK_MEDIA_TYPE, headers=headers)


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes, within ``timeout`` seconds (a client trickling it holds no connection)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BatchTooLargeError(f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise BatchTooLargeError(f"request body exceeds the limit of {limit} bytes")
    except TimeoutError:
        raise RequestTimeoutError(f"the request body was not complete within {timeout:g} s "
                                  f"({len(body)} bytes received)") from None
    return bytes(body)


def _entry(frame_id: str, chunk: FrameChunk | FrameError, strict: bool) -> BatchEntry:
    if isinstance(chunk, FrameChunk):
        return BatchEntry(frame_id, 200, chunk.data, etag=chunk.etag, shape=chunk.shape)
    if strict:
        raise chunk
    return BatchEntry(frame_id, chunk.status, code=chunk.code, message=str(chunk))


async def _off_loop(reader: ChunkReader, fn: Callable[[A], R], arg: A) -> R:
    """Run a read on the event loop when it is a local ``pread`` (microseconds: a thread-pool hop costs more),
    in a worker thread when it is a network call to object storage."""
    return fn(arg) if reader.local else await run_in_threadpool(fn, arg)


@router.post(
    "/batch",
    response_class=Response,
    description=_DESCRIPTION_BATCH,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": BatchRequest.model_json_schema()}}}},
    responses={200: {"content": {BATCH_MEDIA_TYPE: {}}}, 413: {"description": "too many ids or body too large"}},
)
async def get_batch(request: Request, reader: ReaderDep, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Many frames' maps in one response."""
    if not is_json(request.headers.get("content-type")):  # also keeps browsers' cross-site "simple" POSTs out
        raise UnsupportedMediaTypeError(
            f"the batch body must be Content-Type: application/json, got {request.headers.get('content-type')!r}")
    body = await _read_body(request, settings.max_body_bytes, settings.body_timeout)
    try:
        req = BatchRequest.model_validate_json(body)
    except ValidationError as e:
        raise _invalid_batch(e) from None
    if len(req.ids) > settings.max_batch:
        raise BatchTooLargeError(f"batch of {len(req.ids)} ids exceeds max_batch={settings.max_batch}")
    chunks = await _off_loop(reader, functools.partial(reader.read_many, views=req.views), req.ids)
    entries = [_entry(fid, chunk, req.strict) for fid, chunk in zip(req.ids, chunks, strict=True)]
    served = sum(e.status == 200 for e in entries)
    metrics.frames.labels("/features/batch").inc(served)
    if served < len(entries):
        for e in entries:
            if e.status != 200:
                metrics.frame_errors.labels(e.code).inc()
    return Response(encode_batch(entries), media_type=BATCH_MEDIA_TYPE, headers=_encoding_headers(reader, None))


def _invalid_batch(err: ValidationError) -> ApiError:
    """The batch body is not the expected JSON: 422 naming where."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidRequestError(f"invalid batch request at {where}: {first['msg']}")
