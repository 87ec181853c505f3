"""The quantised encodings: the quantiser against an independent float64 reference, its error bounds, the chunk
layout, the encoding's self-description, and the zarr codec against ``decode_chunk`` (both paths equal)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from shared.errors import DataError
from shared.features import ENCODINGS, FeatureEncoding, decode_chunk, encode_chunk, encoding
from shared.quantize import Quantizer, decode, encode, encoded_size, quantize, roundtrip
from shared.zarr_codec import QuantizeCodec

QUANTIZED = [name for name, enc in ENCODINGS.items() if enc.quantizer is not None]
_BF16_VALUES = (np.arange(1 << 15, dtype=np.uint32) << 16).view(np.float32)  # every bfloat16 >= 0
_BF16_VALUES = _BF16_VALUES[np.isfinite(_BF16_VALUES)].astype(np.float64)


def _step_up(exact: float, scale_dtype: str) -> float:
    """The smallest value of ``scale_dtype`` >= ``exact``: bfloat16 by searching all of its values, float32 by its
    bit pattern (independent of the implementation's astype, nextafter and bit rounding)."""
    if scale_dtype == "bfloat16":
        return float(_BF16_VALUES[np.searchsorted(_BF16_VALUES, exact)])
    (bits,) = struct.unpack("<I", struct.pack("<f", exact))
    value = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value if value >= exact else struct.unpack("<f", struct.pack("<I", bits + 1))[0]


def reference(x: np.ndarray, q: Quantizer) -> tuple[list[float], list[int], np.ndarray, np.ndarray]:
    """The quantiser of the module docstring, one plane at a time in Python floats: steps, zero points, codes and
    the decoded float32 values."""
    planes = x.reshape(-1, x.shape[-2] * x.shape[-1]).astype(np.float64)
    qmax = 2**q.bits - 1
    steps, zeros, codes, out = [], [], np.zeros(planes.shape, np.int64), np.zeros(planes.shape, np.float32)
    for p, plane in enumerate(planes):
        lo, hi = min(0.0, float(plane.min())), max(0.0, float(plane.max()))
        step = _step_up((hi - lo) / qmax, q.scale_dtype)
        div = step if step > 0 else 1.0
        z = round(-lo / div)  # Python rounds half to even
        steps.append(step)
        zeros.append(z)
        for i, v in enumerate(plane):
            codes[p, i] = min(max(round(float(v) / div) + z, 0), qmax)
            out[p, i] = np.float32((codes[p, i] - z) * step)  # float64 product of two exact values, then rounded
    return steps, zeros, codes.reshape(x.shape), out.reshape(x.shape)


def relu_maps(rng: np.random.Generator, shape=(64, 6, 8), zero_fraction: float = 0.5) -> np.ndarray:
    """pool5-like maps: non-negative, heavy-tailed per channel, about ``zero_fraction`` exact zeros."""
    scale = rng.lognormal(0.0, 1.0, size=(*shape[:-2], 1, 1))
    x = rng.gamma(1.5, 1.0, size=shape) * scale
    x[rng.random(shape) < zero_fraction] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize(("bits", "scale_dtype"), [(8, "bfloat16"), (8, "float32"), (10, "bfloat16"),
                                                   (6, "bfloat16"), (4, "float32"), (12, "float32"), (16, "bfloat16")])
def test_quantiser_equals_float64_reference(bits, scale_dtype):
    rng = np.random.default_rng(bits)
    q = Quantizer(bits, scale_dtype)
    x = relu_maps(rng, (16, 5, 7))  # 35 elements per plane: not a multiple of 8 (bit planes pad)
    x[3] -= 2.0 * x[3].mean()  # planes with both signs, and one all negative, one all zero
    x[4] = -np.abs(x[4])
    x[5] = 0.0
    steps, zeros, codes = quantize(x, q)
    ref_steps, ref_zeros, ref_codes, ref_out = reference(x, q)
    assert steps.dtype == np.float32
    np.testing.assert_array_equal(steps.astype(np.float64), ref_steps)
    np.testing.assert_array_equal(zeros, ref_zeros)
    np.testing.assert_array_equal(codes, ref_codes)
    decoded = decode(encode(x, q), x.shape, q)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, ref_out)
    np.testing.assert_array_equal(roundtrip(x, q), ref_out)


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float32"])
def test_error_bounds_and_exact_zeros(bits, scale_dtype):
    rng = np.random.default_rng(1)
    q = Quantizer(bits, scale_dtype)
    x = relu_maps(rng, (6, 64, 6, 8))  # a batch of maps quantises map by map, plane by plane
    mixed = x - x.mean(axis=(-2, -1), keepdims=True)
    for maps, bound in ((x, 0.5), (mixed, 1.0)):
        steps, _, _ = quantize(maps, q)
        err = np.abs(roundtrip(maps, q).astype(np.float64) - maps)
        assert (err <= bound * steps.astype(np.float64)[..., None, None] * (1 + 1e-6)).all()
    back = roundtrip(x, q)
    assert (back[x == 0] == 0).all() and (back[x > 0] >= 0).all()
    peak = x.reshape(6, 64, -1).max(axis=-1)
    rel = np.abs(back - x).reshape(6, 64, -1).max(axis=-1) / peak
    assert rel.max() <= 0.5 / (2**bits - 1) * (1 + 2.0**-7) + 1e-7  # a step rounded up by at most 1 bfloat16 ulp


def test_tiny_and_huge_ranges():
    """bfloat16 steps have float32's exponent range: tiny and huge maps quantise as finely as any other."""
    for scale in (1e-30, 1e-6, 1.0, 1e30):
        x = relu_maps(np.random.default_rng(4), (3, 4, 5)) * np.float32(scale)
        for q in (Quantizer(8, "bfloat16"), Quantizer(8, "float32")):
            steps, _, codes = quantize(x, q)
            assert (steps > 0).all() and codes.max() >= 253
            err = np.abs(roundtrip(x, q).astype(np.float64) - x)
            assert (err <= steps.astype(np.float64)[:, None, None] / 2 * (1 + 1e-6)).all()
    with pytest.raises(ValueError, match="beyond what float32 steps"):  # only float64 maps can get there
        quantize(np.array([[[0.0, 1e300]]]), Quantizer(8, "bfloat16"))
    assert not roundtrip(np.zeros((3, 2, 2), np.float32), Quantizer()).any()


def test_non_finite_and_bad_shapes_are_refused():
    q = Quantizer()
    x = np.ones((2, 3, 4), np.float32)
    x[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        encode(x, q)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        quantize(np.ones(5, np.float32), q)
    data = encode(np.ones((2, 3, 4), np.float32), q)
    with pytest.raises(DataError, match="expected"):
        decode(data[:-1], (2, 3, 4), q)
    with pytest.raises(DataError, match="does not fit"):
        decode(data, (2, 3, 4), q, out=np.empty((2, 4, 3), np.float32))
    for bad in ({"bits": 1}, {"bits": 17}, {"scale_dtype": "float16"}, {"version": 2}):
        with pytest.raises(ValueError):
            Quantizer(**bad)


def test_layout():
    q = Quantizer(10, "bfloat16")
    x = relu_maps(np.random.default_rng(2), (3, 5, 7))
    data = encode(x, q)
    assert len(data) == encoded_size(x.shape, q) == 3 * (2 + 2) + 105 + 2 * 14  # 105 codes, 2 bit planes
    steps, zeros, codes = quantize(x, q)
    assert data[:6] == (steps.view("<u4") >> 16).astype("<u2").tobytes() and data[6:12] == zeros.astype("<u2").tobytes()
    assert data[12:117] == (codes.ravel() & 0xFF).astype(np.uint8).tobytes()
    for k, at in ((8, 117), (9, 131)):
        bits = np.unpackbits(np.frombuffer(data[at : at + 14], np.uint8), count=105)
        assert np.array_equal(bits, (codes.ravel() >> k) & 1)
    assert encoded_size((64, 6, 8), Quantizer(8, "float32")) == 64 * 5 + 3072


@pytest.mark.parametrize("name", QUANTIZED)
def test_chunks_round_trip_and_fail_on_damage(name):
    enc = encoding(name)
    x = relu_maps(np.random.default_rng(3))
    data = encode_chunk(x, enc)
    np.testing.assert_array_equal(decode_chunk(data, x.shape, enc), enc.roundtrip(x))
    out = np.full(x.shape, -1.0, np.float32)
    assert decode_chunk(data, x.shape, enc, out=out) is out
    np.testing.assert_array_equal(out, enc.roundtrip(x))
    assert len(data) < x.nbytes / 4  # 8/10-bit codes of a map with half zeros, compressed
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    with pytest.raises(DataError, match="CRC32C"):
        decode_chunk(bytes(damaged), x.shape, enc)
    with pytest.raises(DataError, match="expected"):
        decode_chunk(data, (64, 6, 7), enc)


def test_encodings_describe_themselves():
    for name, enc in ENCODINGS.items():
        assert FeatureEncoding.from_dict(enc.to_dict()) == enc, name
    q8 = encoding("q8-zstd1")
    conf = q8.to_dict()["configuration"]
    assert conf["version"] == 3 and conf["quantize"] == {"bits": 8, "scale_dtype": "bfloat16", "version": 1}
    assert not q8.lossless and encoding("f32-zstd1").lossless and q8.dtype == "float32"
    assert q8.header() == "zstd;level=1;checksum=1;crc32c=1;quantize=8;scale=bfloat16;qversion=1"
    assert encoding("f32-zstd1").to_dict()["configuration"]["version"] == 2  # existing stores are unchanged
    no_quant = {"name": "zstd", "configuration": {**conf}}
    del no_quant["configuration"]["quantize"]
    with pytest.raises(ValueError, match="needs 'quantize'"):
        FeatureEncoding.from_dict(no_quant)
    with pytest.raises(ValueError, match="has no 'quantize'"):
        FeatureEncoding.from_dict({"name": "zstd", "configuration": {**conf, "version": 2}})
    with pytest.raises(ValueError, match="unknown settings"):
        FeatureEncoding.from_dict({"name": "zstd", "configuration": {**conf, "shuffle": True}})
    with pytest.raises(ValueError, match="version 4"):
        FeatureEncoding.from_dict({"name": "zstd", "configuration": {**conf, "version": 4}})
    with pytest.raises(ValueError, match="float32"):
        FeatureEncoding("float16", quantizer=Quantizer())
    with pytest.raises(ValueError, match="CRC32C"):
        FeatureEncoding("float32", crc32c=False, quantizer=Quantizer())


@pytest.mark.parametrize("name", QUANTIZED)
def test_zarr_codec_reads_and_writes_what_decode_chunk_does(tmp_path, name):
    """A sharded zarr array with the store's codec chain: zarr's values equal ``decode_chunk`` of the chunk
    bytes, and those bytes equal ``encode_chunk``'s (what the server sends and the client decodes)."""
    enc = encoding(name)
    x = np.stack([np.stack([relu_maps(np.random.default_rng(10 * i + v)) for v in range(2)]) for i in range(3)])
    arr = zarr.create_array(tmp_path / "a", shape=x.shape, dtype="float32", chunks=(1, 1, *x.shape[2:]),
                            shards=x.shape, serializer=QuantizeCodec(enc.quantizer), fill_value=0,
                            compressors=[ZstdCodec(level=enc.level, checksum=enc.checksum), Crc32cCodec()])
    arr[:] = x
    back = zarr.open_array(tmp_path / "a", mode="r")
    assert back.metadata.to_dict()["codecs"][0]["configuration"]["codecs"][0] == QuantizeCodec(enc.quantizer).to_dict()
    np.testing.assert_array_equal(back[:], enc.roundtrip(x))
    shard = (tmp_path / "a" / "c" / "0" / "0" / "0" / "0" / "0").read_bytes()
    index = np.frombuffer(shard[-(x.shape[0] * x.shape[1] * 16 + 4) : -4], "<u8").reshape(-1, 2)
    for k, (offset, nbytes) in enumerate(index):
        i, v = divmod(k, x.shape[1])
        assert shard[offset : offset + nbytes] == encode_chunk(x[i, v], enc)
    with pytest.raises(ValueError, match="float32"):
        zarr.create_array(tmp_path / "b", shape=(2, 2), dtype="float16", serializer=QuantizeCodec(enc.quantizer))
