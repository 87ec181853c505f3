"""The feature contract: how a pool5 map is encoded in the store and on the wire.

A stored chunk is one frame's map, shape (C, H, W), serialised little-endian in ``dtype`` (or, for the quantised
encodings of format version 3, as per-channel steps + integer codes: ``shared.quantize``), compressed with
Zstandard (frame checksum on) and, in format versions 2 and 3, followed by the CRC32C of the compressed bytes (4
bytes, little-endian: zarr v3's ``crc32c`` codec). The CRC lets the server check a chunk on the hot path without
decoding it (:func:`chunk_crc`: one hardware CRC over the chunk, ~0.5 µs per 10 KB); version-1 chunks (no CRC)
are checked only when decoded. The server sends these bytes as they are; clients decode with
:func:`decode_chunk`. Encodings are small frozen self-describing objects (``to_dict`` / ``from_dict``), recorded
in the store and in headers.

Batch responses (``application/x-xmodal-batch``) are framed as::

    b"XMB1" | uint32 LE n | n bytes of UTF-8 JSON {"frames": [entry, ...]} | payload bytes

where each entry is ``{"id", "status", "offset", "length"}`` plus, for status 200,
``{"etag", "shape"}`` (dtype and codec are in the response headers), or ``{"code", "message"}``;
``offset``/``length`` locate the entry's chunk bytes in the payload.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import google_crc32c
import numcodecs
import numpy as np

from shared.errors import DataError
from shared.quantize import Quantizer, decode, encode, roundtrip

__all__ = [
    "BATCH_MAGIC",
    "BATCH_MEDIA_TYPE",
    "ENCODINGS",
    "HEADER_CODEC",
    "HEADER_DTYPE",
    "HEADER_SHAPE",
    "HEADER_TEACHER",
    "NPY_MEDIA_TYPE",
    "VIEWS",
    "BatchEntry",
    "FeatureEncoding",
    "chunk_crc",
    "decode_batch",
    "decode_chunk",
    "encode_batch",
    "encode_chunk",
    "encoding",
]

HEADER_SHAPE = "X-Feature-Shape"
HEADER_DTYPE = "X-Feature-Dtype"
HEADER_CODEC = "X-Feature-Codec"
HEADER_TEACHER = "X-Teacher-Id"
BATCH_MEDIA_TYPE = "application/x-xmodal-batch"
NPY_MEDIA_TYPE = "application/x-npy"
BATCH_MAGIC = b"XMB1"
VIEWS = ("identity", "mirror")
"""What a stored map is of: ``identity`` = the teacher's map of the RGB frame; ``mirror`` = its map of the
horizontally mirrored frame, computed by the teacher (a CNN is not mirror-equivariant: flipping the identity map
is only an approximation of it)."""
_FORMAT_VERSION = 2  # 2: chunks end with a CRC32C; 1 (read only): plain zstd frames
_QUANTIZED_VERSION = 3  # 3: quantised chunks (shared.quantize) + zstd + CRC32C
_CONFIG_KEYS = {"dtype", "level", "checksum", "crc32c", "quantize"}
_CRC_RESIDUE = 0x48674BC7  # CRC32C of any message followed by its own CRC32C (little-endian)


@dataclass(frozen=True)
class FeatureEncoding:
    """dtype + compressor of stored chunks. ``float32`` is lossless; ``float16`` halves the bytes; a ``quantizer``
    (format version 3, ``dtype`` float32: what decoding yields) stores per-channel steps + ``bits``-bit codes.

    ``crc32c``: each chunk ends with the CRC32C of its compressed bytes (format version 2; stores of version 1
    have no CRC and read as ``crc32c=False``; quantised encodings always have it).
    """

    dtype: Literal["float32", "float16"]
    codec: Literal["zstd"] = "zstd"
    level: int = 1
    checksum: bool = True
    crc32c: bool = True
    quantizer: Quantizer | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if self.codec != "zstd":
            raise ValueError(f"codec must be 'zstd', got {self.codec!r}")
        if not -7 <= self.level <= 22:
            raise ValueError(f"zstd level must be in -7..22, got {self.level}")
        if self.quantizer is not None and (self.dtype != "float32" or not self.crc32c):
            raise ValueError("a quantised encoding decodes to float32 and its chunks end with a CRC32C "
                             f"(dtype='float32', crc32c=True), got dtype={self.dtype!r}, crc32c={self.crc32c}")

    @property
    def lossless(self) -> bool:
        return self.dtype == "float32" and self.quantizer is None

    @property
    def version(self) -> int:
        """Chunk format version: 1 plain zstd, 2 + CRC32C, 3 quantised + CRC32C."""
        return _QUANTIZED_VERSION if self.quantizer else _FORMAT_VERSION if self.crc32c else 1

    def to_dict(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"dtype": self.dtype, "level": self.level, "checksum": self.checksum}
        if self.crc32c:
            conf["crc32c"] = True
        if self.quantizer is not None:
            conf["quantize"] = self.quantizer.to_dict()
        return {"name": self.codec, "configuration": {**conf, "version": self.version}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoding:
        if not isinstance(data, dict) or not isinstance(data.get("configuration"), dict):
            raise ValueError(f"expected {{'name': ..., 'configuration': {{...}}}}, got {data!r}")
        conf = dict(data["configuration"])
        version = conf.pop("version", 1)
        if version not in (1, _FORMAT_VERSION, _QUANTIZED_VERSION):
            raise ValueError(f"feature encoding version {version} is not supported (expected 1, {_FORMAT_VERSION} "
                             f"or {_QUANTIZED_VERSION})")
        if unknown := set(conf) - _CONFIG_KEYS:
            raise ValueError(f"feature encoding (version {version}) has unknown settings {sorted(unknown)}")
        if version == 1 and conf.get("crc32c"):
            raise ValueError("feature encoding version 1 has no crc32c chunks")
        if (version == _QUANTIZED_VERSION) != ("quantize" in conf):
            raise ValueError(f"feature encoding version {version} {'needs' if version == 3 else 'has no'} "
                             "'quantize' settings")
        conf.setdefault("crc32c", False)
        if "quantize" in conf:
            conf["quantizer"] = Quantizer.from_dict(conf.pop("quantize"))
        return cls(codec=data.get("name", "zstd"), **conf)

    def header(self) -> str:
        """Compact form for the ``X-Feature-Codec`` header, e.g. ``zstd;level=1;checksum=1;crc32c=1``; quantised:
        ``...;crc32c=1;quantize=8;scale=bfloat16;qversion=1`` (``X-Feature-Dtype`` is then the decoded float32)."""
        out = f"{self.codec};level={self.level};checksum={int(self.checksum)}" + (";crc32c=1" if self.crc32c else "")
        if q := self.quantizer:
            out += f";quantize={q.bits};scale={q.scale_dtype};qversion={q.version}"
        return out

    def roundtrip(self, maps: np.ndarray) -> np.ndarray:
        """The float32 values :func:`decode_chunk` gives back for each (C, H, W) map of ``maps`` (..., C, H, W),
        computed without compressing (the store's error statistics)."""
        if self.quantizer is not None:
            return roundtrip(maps, self.quantizer)
        return np.asarray(maps).astype(self.dtype).astype(np.float32)


ENCODINGS: dict[str, FeatureEncoding] = {
    "f32-zstd1": FeatureEncoding("float32"),  # lossless default
    "f16-zstd1": FeatureEncoding("float16"),  # lossy option: ~2x smaller, <= 2**-11 relative rounding
    # per-channel linear quantisation (shared.quantize; bfloat16 steps, exact zeros kept), then zstd:
    "q10-zstd1": FeatureEncoding("float32", quantizer=Quantizer(10)),  # 10-bit codes
    "q8-zstd1": FeatureEncoding("float32", quantizer=Quantizer(8)),  # 8-bit codes
    "q6-zstd1": FeatureEncoding("float32", quantizer=Quantizer(6)),  # 6-bit codes
}


def encoding(name: str) -> FeatureEncoding:
    """A named encoding; unknown names raise ValueError listing the known ones."""
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ValueError(f"unknown feature encoding {name!r}; known: {sorted(ENCODINGS)}") from None


@functools.cache
def _zstd(enc: FeatureEncoding) -> numcodecs.Zstd:
    """One codec object per encoding (stateless; building one per chunk cost ~10 % of a decode)."""
    return numcodecs.Zstd(level=enc.level, checksum=enc.checksum)


def encode_chunk(array: np.ndarray, enc: FeatureEncoding) -> bytes:
    """One map encoded exactly as the store's inner chunk codecs write it (little-endian bytes or quantised codes +
    zstd [+ CRC32C]): what benchmarks time the decode of, and what tests plant as a chunk of known content.

    Raises:
        ValueError: a quantised encoding and a map it cannot quantise (non-finite values).
    """
    if enc.quantizer is not None:
        data: Any = encode(np.asarray(array, dtype=np.float32), enc.quantizer)
    else:
        data = np.ascontiguousarray(array, dtype=np.dtype(enc.dtype).newbyteorder("<"))
    frame = bytes(_zstd(enc).encode(data))
    return frame + google_crc32c.value(frame).to_bytes(4, "little") if enc.crc32c else frame


def chunk_crc(data: bytes) -> int:
    """The CRC32C a version-2 chunk ends with, after checking it against the bytes before it (no decode).

    Raises:
        DataError: the chunk is shorter than its CRC or its bytes do not match it (damaged in storage or transit).
    """
    if len(data) < 4 or google_crc32c.value(data) != _CRC_RESIDUE:  # one pass over the whole chunk, CRC included
        raise DataError(f"feature chunk of {len(data)} bytes fails its CRC32C (damaged bytes)")
    return int.from_bytes(data[-4:], "little")


def decode_chunk(data: bytes, shape: Sequence[int], enc: FeatureEncoding, out: np.ndarray | None = None) -> np.ndarray:
    """Decode stored chunk bytes to a float32 array of ``shape`` (into ``out`` when given: a batch decodes straight
    into its stacked array).

    Raises:
        DataError: corrupt or truncated bytes (CRC32C, zstd checksum), or a size that does not match ``shape``.
    """
    if enc.crc32c:
        chunk_crc(data)
        data = memoryview(data)[:-4]
    try:
        raw = _zstd(enc).decode(data)
    except Exception as e:  # zstd raises RuntimeError/ValueError for corrupt frames
        raise DataError(f"corrupt feature chunk ({len(data)} bytes): {e}") from e
    if enc.quantizer is not None:
        return decode(raw, shape, enc.quantizer, out)
    dtype = np.dtype(enc.dtype).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"feature chunk decodes to {len(raw)} bytes, expected {expected} for shape {tuple(shape)}")
    arr = np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))
    if out is None:
        return arr.astype(np.float32)
    if out.shape != arr.shape:
        raise DataError(f"feature map of shape {arr.shape} does not fit an output of shape {out.shape}")
    out[...] = arr
    return out


@dataclass(frozen=True)
class BatchEntry:
    """One frame of a batch response: status 200 with chunk bytes, or an error code and message."""

    id: str
    status: int
    data: bytes = b""
    etag: str | None = None
    shape: tuple[int, ...] | None = None
    code: str | None = None
    message: str | None = None


def encode_batch(entries: Sequence[BatchEntry]) -> bytes:
    """Frame entries as ``XMB1 | len | JSON | payload`` (see the module docstring)."""
    meta, offset = [], 0
    for e in entries:
        item: dict[str, Any] = {"id": e.id, "status": e.status, "offset": offset, "length": len(e.data)}
        if e.status == 200:
            item.update(etag=e.etag, shape=list(e.shape or ()))
        else:
            item.update(code=e.code, message=e.message)
        meta.append(item)
        offset += len(e.data)
    head = json.dumps({"frames": meta}, separators=(",", ":")).encode()
    return b"".join([BATCH_MAGIC, struct.pack("<I", len(head)), head, *(e.data for e in entries)])


def decode_batch(body: bytes) -> list[BatchEntry]:
    """Parse a batch body. Raises DataError for bad magic, truncation or inconsistent offsets."""
    if len(body) < 8 or body[:4] != BATCH_MAGIC:
        raise DataError(f"not a feature batch (magic {body[:4]!r}, expected {BATCH_MAGIC!r})")
    (n,) = struct.unpack("<I", body[4:8])
    if 8 + n > len(body):
        raise DataError(f"truncated batch: header says {n} JSON bytes, body has {len(body) - 8}")
    try:
        frames = json.loads(body[8 : 8 + n])["frames"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"batch header is not the expected JSON: {e}") from e
    payload = memoryview(body)[8 + n :]
    out = []
    for f in frames:
        start, length = int(f["offset"]), int(f["length"])
        if start < 0 or length < 0 or start + length > len(payload):
            raise DataError(f"batch entry {f.get('id')!r} points outside the payload ({start}+{length})")
        out.append(BatchEntry(id=f["id"], status=int(f["status"]), data=bytes(payload[start : start + length]),
                              etag=f.get("etag"), shape=tuple(f["shape"]) if f.get("shape") else None,
                              code=f.get("code"), message=f.get("message")))
    return out
