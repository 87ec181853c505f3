"""The zarr v3 array-to-bytes codec ``xmodal.quantize``: float32 chunks as per-channel steps + integer codes.

It is the first codec of a quantised store's features array (``zstd`` and ``crc32c`` follow it, as in the other
encodings), so zarr itself writes and reads those chunks (``Collection.read``, ``verify``, ``migrate``) with the
exact bytes and values of :func:`shared.features.encode_chunk` / :func:`~shared.features.decode_chunk`: both call
:mod:`shared.quantize`. Each chunk is quantised plane by plane over its last two axes, so a (1, 1, C, H, W)
chunk of the store is the (C, H, W) map the client decodes.

Importing this module registers the codec with zarr; ``teacher_server.store`` imports it, and so must any other
program that opens a quantised store with zarr directly (``import shared.zarr_codec``). It lives apart from
``shared.features`` because importing zarr costs ~0.3 s that clients and ``--help`` do not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration
from zarr.registry import register_codec

from shared.quantize import Quantizer, decode, encode, encoded_size

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

__all__ = ["CODEC_NAME", "QuantizeCodec"]

CODEC_NAME = "xmodal.quantize"


@dataclass(frozen=True)
class QuantizeCodec(ArrayBytesCodec):
    """Serialises a float32 chunk as :mod:`shared.quantize` lays it out (steps, zero points, codes)."""

    is_fixed_size = True
    quantizer: Quantizer

    def __init__(self, quantizer: Quantizer) -> None:
        object.__setattr__(self, "quantizer", quantizer)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _, conf = parse_named_configuration(data, CODEC_NAME)
        return cls(Quantizer.from_dict(dict(conf)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": CODEC_NAME, "configuration": self.quantizer.to_dict()}

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar],
                 chunk_grid: ChunkGrid) -> None:
        if dtype.to_native_dtype() != np.dtype(np.float32):
            raise ValueError(f"{CODEC_NAME} encodes float32 arrays, not {dtype.to_native_dtype()}")
        if len(shape) < 2:
            raise ValueError(f"{CODEC_NAME} quantises (H, W) planes: the array needs >= 2 dimensions, got {shape}")

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        data = encode(np.asarray(chunk_array.as_numpy_array(), dtype=np.float32), self.quantizer)
        return chunk_spec.prototype.buffer.from_bytes(data)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        arr = decode(chunk_bytes.as_numpy_array(), chunk_spec.shape, self.quantizer)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer:
        return self._encode_sync(chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return encoded_size(chunk_spec.shape, self.quantizer)


register_codec(CODEC_NAME, QuantizeCodec)
