"""Whole feature shards encoded in one synchronous pass: the bytes zarr's sharding codec would write, without its
per-chunk asyncio tasks and thread hand-offs.

Through ``array[rows] = data`` zarr spends ~0.7 ms of CPU per frame of a 256-frame shard here, mostly scheduling
(a task per codec per chunk, a thread hop per zstd call), against ~0.15 ms for the same codecs called in a loop
(BENCHMARKS.md, "Precompute pipeline"); in precompute that is CPU taken from the teacher's forward and the image
decode. The codecs are the array's own objects (whatever chain its metadata names: dtype, zstd, CRC32C, a
quantiser), called through zarr's synchronous codec methods, and the shard layout (inner chunks in Morton order,
then the index of (offset, length) pairs under its own codecs) is zarr's: the tests check that the bytes are
identical to zarr's for every encoding. An array this cannot encode (no sharding, a codec without a synchronous
encode, the index at the start, a zarr whose internals differ) is left to zarr: :func:`write_full_shard` returns
False.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.sync import sync

__all__ = ["encode_full_shard", "write_full_shard"]

_NO_CHUNK = np.iinfo(np.uint64).max  # zarr's index entry for a missing chunk

Chain = tuple[list[Any], Any, list[Any]]


def _sync_chain(codecs: tuple[Any, ...]) -> Chain | None:
    """(array->array, array->bytes, bytes->bytes) codecs in order when each encodes synchronously, else None."""
    if not all(callable(getattr(c, "_encode_sync", None)) for c in codecs):
        return None
    aa = [c for c in codecs if isinstance(c, ArrayArrayCodec)]
    ab = [c for c in codecs if isinstance(c, ArrayBytesCodec)]
    bb = [c for c in codecs if isinstance(c, BytesBytesCodec)]
    if len(ab) != 1 or list(codecs) != [*aa, *ab, *bb]:
        return None
    return aa, ab[0], bb


def _encode(chain: Chain, buf: NDBuffer, spec: Any) -> bytes:
    aa, ab, bb = chain
    for c in aa:
        buf = c._encode_sync(buf, spec)
    out = ab._encode_sync(buf, spec)
    for c in bb:
        out = c._encode_sync(out, spec)
    return out.to_bytes()


def _layout(array: zarr.Array, shard: int) -> tuple[Any, Chain, Chain, Any, Any, tuple[int, ...]] | None:
    """What encoding shard ``shard`` takes: the sharding codec, both codec chains, the inner chunk and index specs
    and the chunks per shard; None when zarr must write it."""
    try:
        from zarr.codecs.sharding import ShardingCodec, ShardingCodecIndexLocation

        codecs = array.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
            return None
        sharding = codecs[0]
        chain, index_chain = _sync_chain(sharding.codecs), _sync_chain(sharding.index_codecs)
        if chain is None or index_chain is None or sharding.index_location != ShardingCodecIndexLocation.end:
            return None
        spec = array.metadata.get_chunk_spec((shard,) + (0,) * (array.ndim - 1), array._async_array.config,
                                             default_buffer_prototype())
        per_shard = sharding._get_chunks_per_shard(spec)
        return (sharding, chain, index_chain, sharding._get_chunk_spec(spec),
                sharding._get_index_chunk_spec(per_shard), per_shard)
    except (AttributeError, TypeError, ImportError):
        return None


def encode_full_shard(array: zarr.Array, shard: int, data: np.ndarray) -> bytes | None:
    """The bytes zarr stores for shard ``shard`` (counted along axis 0) of ``array`` once ``data`` is written to
    it with ``write_empty_chunks`` on (every chunk stored: an all-zero map is a chunk the server can send): ``data``
    holds that shard's rows (fewer in the last shard), every other axis whole, in the array's dtype. None when
    zarr must encode it (see the module docstring).

    Raises:
        ValueError: ``data`` is not one shard's rows of this array.
    """
    rows = array.shards[0] if array.shards else 0
    first = shard * rows
    want = (min(rows, array.shape[0] - first), *array.shape[1:])
    if data.shape != want or data.dtype != array.dtype:
        raise ValueError(f"shard {shard} of {array.path!r} takes {want} {array.dtype}, got {data.shape} {data.dtype}")
    layout = _layout(array, shard)
    if layout is None:
        return None
    sharding, chain, index_chain, chunk_spec, index_spec, per_shard = layout
    filled = len(data)
    if filled < rows:  # the last shard: inner chunks past the array's end are not stored, one across it is padded
        data = np.concatenate([data, np.full((rows - filled, *data.shape[1:]), array.fill_value, data.dtype)])
    inner = sharding.chunk_shape
    index = np.full((*per_shard, 2), _NO_CHUNK, dtype="<u8")
    parts, offset = [], 0
    from zarr.core.indexing import morton_order_iter

    for coords in morton_order_iter(per_shard):
        if coords[0] * inner[0] >= filled:
            continue
        where = tuple(slice(c * s, (c + 1) * s) for c, s in zip(coords, inner, strict=True))
        part = _encode(chain, NDBuffer.from_numpy_array(np.ascontiguousarray(data[where])), chunk_spec)
        index[coords] = (offset, len(part))
        parts.append(part)
        offset += len(part)
    parts.append(_encode(index_chain, NDBuffer.from_numpy_array(index), index_spec))
    return b"".join(parts)


def write_full_shard(array: zarr.Array, shard: int, data: np.ndarray) -> bool:
    """Store shard ``shard`` of ``array`` holding ``data`` (see :func:`encode_full_shard`), replacing any previous
    object. Returns False, having written nothing, when zarr's own path must write it (with ``write_empty_chunks``
    on: ``array.with_config({"write_empty_chunks": True})[rows] = data`` stores the same bytes)."""
    blob = encode_full_shard(array, shard, data)
    if blob is None:
        return False
    key = array.metadata.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))
    sync((array.store_path / key).set(default_buffer_prototype().buffer.from_bytes(blob)))
    return True
