"""Per-channel linear quantisation of feature maps: the chunk layout of the quantised feature encodings.

A map of shape (..., H, W) (one frame's (C, H, W) pool5 map) is cut into its ``P = prod(shape[:-2])`` planes (the
channels); each plane ``p`` gets its own step ``s`` and integer zero point ``z``, chosen so that an exact zero
decodes to an exact zero (pool5 maps after ReLU are ~50 % zeros; a zero that came back as 1e-3 would be noise the
student regresses)::

    lo, hi = min(0, min x), max(0, max x)        over the plane
    s      = (hi - lo) / (2**bits - 1), rounded up to ``scale_dtype`` (so every code fits)
    z      = round(-lo / s)                       (0 for a plane without negative values: every plane of a ReLU map)
    code   = clip(round(x / s) + z, 0, 2**bits - 1)
    x'     = (code - z) * s                       (float32; one rounding of an exact product)

The arithmetic of the encoder is float64, rounding half to even. Error: ``|x' - x| <= s / 2`` on planes without
negative values (``<= s`` at the extreme of a plane with both signs, where rounding ``z`` can push the top code one
step over and it is clipped). ``scale_dtype="bfloat16"`` stores each step in 2 bytes (the upper half of its
float32) with float32's whole exponent range, so no plane's values are too small or too large for it; rounding the
step up to 8 significant bits costs at most 2**-7 of the resolution (the codes of a plane's top value end at
>= 253 of 255 instead of 255).

Serialised layout of one map (little-endian), which zstd then compresses::

    P steps (float32, or bfloat16 as uint16) | P zero points (uint8 for bits <= 8, else uint16) | codes

``codes``: for bits <= 8 one uint8 per element (C order); for 8 < bits <= 16 the low byte of every code (one uint8
per element), then ``bits - 8`` bit planes of the high bits (bit 8 first), each ``np.packbits`` of the n elements
(``ceil(n / 8)`` bytes). Keeping the low bytes byte-aligned lets zstd still find the runs of zeros.

Pure numpy, no zarr: ``shared.features`` decodes with it on the client; ``shared.zarr_codec`` wraps it as the zarr
codec that writes and reads these chunks in the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shared.errors import DataError

__all__ = ["QUANTIZER_VERSION", "Quantizer", "decode", "dequantize", "encode", "encoded_size", "quantize",
           "roundtrip"]

QUANTIZER_VERSION = 1
ScaleDtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class Quantizer:
    """``bits`` per code (2..16) and the dtype of the per-channel steps (bfloat16 halves their bytes)."""

    bits: int = 8
    scale_dtype: ScaleDtype = "bfloat16"
    version: int = QUANTIZER_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise ValueError(f"quantiser bits must be an integer in 2..16, got {self.bits!r}")
        if self.scale_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"quantiser scale_dtype must be 'float32' or 'bfloat16', got {self.scale_dtype!r}")
        if self.version != QUANTIZER_VERSION:
            raise ValueError(f"quantiser version {self.version!r} is not supported (expected {QUANTIZER_VERSION})")

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)

    @property
    def zero_dtype(self) -> np.dtype:
        return self.code_dtype.newbyteorder("<")

    @property
    def step_dtype(self) -> np.dtype:
        """How a step is serialised: float32, or bfloat16 as the uint16 upper half of its float32."""
        return np.dtype("<f4" if self.scale_dtype == "float32" else "<u2")

    def to_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "scale_dtype": self.scale_dtype, "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quantizer:
        if not isinstance(data, dict) or set(data) - {"bits", "scale_dtype", "version"}:
            raise ValueError(f"expected a quantiser {{'bits', 'scale_dtype', 'version'}}, got {data!r}")
        return cls(**data)


def _steps(lo: np.ndarray, hi: np.ndarray, q: Quantizer) -> np.ndarray:
    """Per-plane steps as float32 values that ``q.scale_dtype`` holds exactly, each >= (hi - lo) / qmax (rounded
    up, so the top code fits).

    Raises:
        ValueError: a step beyond float32's range (a plane spanning more than ~3e38 * qmax: not a feature map).
    """
    exact = (hi - lo) / q.qmax
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused below
        steps = exact.astype(np.float32)
    low = steps.astype(np.float64) < exact
    steps[low] = np.nextafter(steps[low], np.float32(np.inf))
    if q.scale_dtype == "bfloat16":
        bits = steps.view(np.uint32)
        upper = (bits >> 16) + ((bits & 0xFFFF) != 0)  # round up to the next bfloat16 (inf stays inf)
        steps = (upper.astype(np.uint32) << 16).view(np.float32)
    if not np.isfinite(steps).all():
        raise ValueError(f"a channel spans {float((hi - lo).max()):.6g}, beyond what float32 steps of {q.bits}-bit "
                         "codes can hold")
    return steps


def _steps_to_bytes(steps: np.ndarray, q: Quantizer) -> bytes:
    if q.scale_dtype == "float32":
        return steps.astype("<f4").tobytes()
    return (steps.view(np.uint32) >> 16).astype("<u2").tobytes()


def _steps_from(raw: np.ndarray, q: Quantizer) -> np.ndarray:
    """float32 steps from their serialised form (``raw`` viewed as ``q.step_dtype``)."""
    return raw.astype(np.float32) if q.scale_dtype == "float32" else (raw.astype(np.uint32) << 16).view(np.float32)


def quantize(x: np.ndarray, q: Quantizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantise maps ``x`` (..., H, W) plane by plane (every (H, W) plane its own step and zero point).

    Returns:
        steps (...,) float32 (values ``q.scale_dtype`` holds exactly); zero points (...,) and codes (..., H, W) in
        ``q.code_dtype``.
    Raises:
        ValueError: ``x`` has fewer than 2 dimensions, NaN or infinite values, or a range the steps cannot hold.
    """
    if x.ndim < 2:
        raise ValueError(f"quantisation needs maps of at least 2 dimensions (..., H, W), got shape {x.shape}")
    flat = np.asarray(x, dtype=np.float64).reshape(*x.shape[:-2], -1)
    if not np.isfinite(flat).all():
        raise ValueError(f"cannot quantise non-finite feature values ({int((~np.isfinite(flat)).sum())} NaN or "
                         "infinite)")
    lo, hi = flat.min(axis=-1, initial=0.0), flat.max(axis=-1, initial=0.0)  # both include 0
    steps = _steps(lo, hi, q)
    div = steps.astype(np.float64)
    div[div == 0] = 1.0  # an all-zero plane: every code is its zero point 0
    zeros = np.rint(-lo / div)
    codes = np.clip(np.rint(flat / div[..., None]) + zeros[..., None], 0, q.qmax)
    return steps, zeros.astype(q.code_dtype), codes.astype(q.code_dtype).reshape(x.shape)


def dequantize(steps: np.ndarray, zeros: np.ndarray, codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(codes - zeros) * steps`` per plane (into ``out`` when given; ``out`` must have codes' shape)."""
    if out is None:
        out = np.empty(codes.shape, dtype=np.float32)
    if zeros.any():
        np.subtract(codes, zeros[..., None, None], out=out, dtype=np.float32)
    else:
        np.copyto(out, codes, casting="unsafe")
    np.multiply(out, steps[..., None, None], out=out)
    return out


def roundtrip(x: np.ndarray, q: Quantizer) -> np.ndarray:
    """What decoding the encoded ``x`` (..., H, W) gives back (float32), computed without serialising."""
    return dequantize(*quantize(x, q))


def encoded_size(shape: Sequence[int], q: Quantizer) -> int:
    """Bytes of one serialised map of ``shape`` (before compression)."""
    planes, n = math.prod(shape[:-2]), math.prod(shape)
    head = planes * (q.step_dtype.itemsize + q.zero_dtype.itemsize)
    return head + n + (q.bits - 8) * -(-n // 8) if q.bits > 8 else head + n


def encode(x: np.ndarray, q: Quantizer) -> bytes:
    """Serialise one map (..., H, W) (see the module docstring for the layout)."""
    steps, zeros, codes = quantize(x, q)
    parts = [_steps_to_bytes(steps, q), zeros.astype(q.zero_dtype).tobytes()]
    flat = codes.ravel()
    if q.bits <= 8:
        parts.append(flat.tobytes())
    else:
        parts.append((flat & 0xFF).astype(np.uint8).tobytes())
        parts += [np.packbits(((flat >> k) & 1).astype(np.uint8)).tobytes() for k in range(8, q.bits)]
    return b"".join(parts)


def decode(data: bytes | memoryview | np.ndarray, shape: Sequence[int], q: Quantizer,
           out: np.ndarray | None = None) -> np.ndarray:
    """float32 map of ``shape`` from its serialised bytes (into ``out`` when given).

    Raises:
        DataError: ``data`` is not the size a map of ``shape`` serialises to, or ``out`` has another shape.
    """
    shape = tuple(int(v) for v in shape)
    buf = np.frombuffer(data, dtype=np.uint8)
    expected = encoded_size(shape, q)
    if buf.size != expected or len(shape) < 2:
        raise DataError(f"quantised feature chunk holds {buf.size} bytes, expected {expected} for shape {shape} at "
                        f"{q.bits} bits")
    if out is not None and out.shape != shape:
        raise DataError(f"feature map of shape {shape} does not fit an output of shape {out.shape}")
    planes, n = math.prod(shape[:-2]), math.prod(shape)
    at = planes * q.step_dtype.itemsize
    steps = _steps_from(buf[:at].view(q.step_dtype), q)
    zeros = buf[at : at + planes * q.zero_dtype.itemsize].view(q.zero_dtype)
    at += zeros.nbytes
    if q.bits <= 8:
        codes = buf[at : at + n].reshape(shape)
    else:
        codes = buf[at : at + n].astype(np.uint16)
        at += n
        width = -(-n // 8)
        for k in range(8, q.bits):
            codes |= np.unpackbits(buf[at : at + width], count=n).astype(np.uint16) << k
            at += width
        codes = codes.reshape(shape)
    return dequantize(steps.reshape(shape[:-2]), zeros.reshape(shape[:-2]), codes, out)
