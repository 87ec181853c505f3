"""Settings of the two teacher-server processes; every field is a CLI flag and a ``TEACHER_*`` env var."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.features import ENCODINGS
from shared.nets.archs import TEACHER_ARCHS, resolve_layer, teacher_layers
from shared.settings import AMP_HELP, IntList, PathList, StrList, split_commas

__all__ = ["MigrateSettings", "PrecomputeSettings", "ServeSettings", "VerifySettings"]


def _store_url(value: object) -> object:
    """A store location in canonical form: a local folder (str or Path), ``file:///folder`` or ``s3://bucket/prefix``
    (any scheme in ``storage.BACKENDS``; an unknown one, or one whose extra is missing, fails at start-up). S3
    credentials and endpoint: AWS_* env vars."""
    from teacher_server.storage import StoreLocation

    return str(StoreLocation.parse(value)) if isinstance(value, str | Path) else value


StoreUrl = Annotated[str, BeforeValidator(_store_url)]
StoreUrlList = Annotated[list[StoreUrl], NoDecode, BeforeValidator(split_commas)]
_CONFIG = SettingsConfigDict(env_prefix="TEACHER_", extra="ignore")
_ALL_LAYERS = tuple(sorted({layer for a in TEACHER_ARCHS for layer in teacher_layers(a)}))
_LAYERS = "; ".join(f"{a} {', '.join(teacher_layers(a))}"
                    + (f" (default {resolve_layer(a, None)})" if len(teacher_layers(a)) > 1 else "")
                    for a in TEACHER_ARCHS)
EncodingName = Literal[tuple(ENCODINGS)]  # type: ignore[valid-type]  # the names shared.features registers


class PrecomputeSettings(BaseSettings):
    model_config = _CONFIG

    store: StoreUrl = Field(description="feature store: a folder or s3://bucket/prefix (created if missing; resumed "
                            "if present; S3 credentials and endpoint from AWS_* env vars)")
    manifests: PathList = Field(description="manifest(s) whose RGB frames are encoded (comma-separated in env)")
    splits: StrList | None = Field(None, description="only frames of these splits (default: all)")
    arch: Literal[TEACHER_ARCHS] = Field("alexnet", description="teacher architecture")  # type: ignore[valid-type]
    layer: Literal[_ALL_LAYERS] | None = Field(  # type: ignore[valid-type]
        None, validate_default=True,
        description=f"layer the teacher's trunk ends at, whose maps are stored (default: the arch's): {_LAYERS}")
    weights: str = Field(
        "imagenet", description="'imagenet', 'random' (control), or a checkpoint path for arch=checkpoint"
    )
    seed: int = Field(0, description="seed of 'random' teacher weights")
    input_size: IntList | None = Field(None, description="H W to resize every frame to (default: native size)")
    encoding: EncodingName = Field("f32-zstd1", description="stored encoding: f32-zstd1 lossless; f16-zstd1 "
                                   "float16; q8-zstd1 / q10-zstd1 per-channel 8- / 10-bit codes (README, Encodings)")
    shard_frames: int = Field(256, ge=1, le=65536, description="frames per shard file")
    batch_size: int = Field(32, ge=1, description="frames per forward pass")
    loader_workers: int | None = Field(None, ge=0, description="DataLoader processes decoding images (default: 2 on "
                                       "the CPU, which they share with the forward; on CUDA one per core, split "
                                       "between torchrun's ranks on the host)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    amp: bool | None = Field(None, description=AMP_HELP)
    views: list[Literal["identity", "mirror"]] = Field(
        ["identity", "mirror"], description="maps stored per frame: identity, and mirror = the teacher's map of the "
        "mirrored frame (a second forward; what students trained with flips regress exactly)")
    worker: str | None = Field(None, pattern=r"^\d+/\d+$", description="this process's share i/n of the shards "
                               "(default: torchrun's RANK/WORLD_SIZE, else 0/1)")
    repair: bool = Field(False, description="re-verify done shards and recompute damaged ones")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("layer")
    @classmethod
    def _arch_has_layer(cls, v: str | None, info: ValidationInfo) -> str | None:
        """None becomes the arch's default layer; a layer the arch lacks fails at start, listing the ones it has."""
        arch = info.data.get("arch")
        return v if arch is None else resolve_layer(arch, v)  # (no arch: its own error is reported)


class ServeSettings(BaseSettings):
    model_config = _CONFIG

    stores: StoreUrlList = Field(description="feature store folder(s) or s3://bucket/prefix URLs to serve "
                                 "(comma-separated in env)")
    host: str = Field("127.0.0.1", description="bind address (0.0.0.0 exposes the service to the network)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    token: SecretStr | None = Field(None, description="bearer token required on /features, /info and /metrics "
                                    "(not on /healthz, /docs, /openapi.json); surrounding whitespace is stripped "
                                    "(HTTP drops it from header values, so it could never match; a trailing "
                                    "newline from a secrets file is the usual cause); empty means no token, "
                                    "whitespace only is refused")
    max_batch: int = Field(512, ge=1, le=65536, description="most frame ids in one batch request")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest accepted request body")
    header_timeout: float = Field(10.0, gt=0, description="seconds a connection gets to send a whole request head "
                                  "(from connecting, or from the first byte of each later request); a slower one "
                                  "gets 408 request_timeout and is closed, an idle new one is closed")
    body_timeout: float = Field(30.0, gt=0, description="seconds a batch request's body may take to arrive once "
                                "its head is in; a slower one gets 408 request_timeout and the connection closes")
    max_header_bytes: int = Field(65536, ge=1024, description="largest request head (request line + headers) in "
                                  "bytes; a larger one gets 431 header_too_large and is closed")
    max_connections: int = Field(512, ge=1, description="most open connections per worker process; a request on "
                                 "one beyond them gets 503 too_many_connections (Retry-After) and is closed")
    keep_alive_timeout: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")

    @field_validator("token", mode="before")
    @classmethod
    def _strip_token(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if v is None or v == "":
            return None  # TEACHER_TOKEN= (empty, as in .env) means no auth
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("the token is only whitespace: set a token, or leave it empty for no auth")
            return v.strip()
        return v

    @functools.cached_property
    def cache_control(self) -> str:
        """``Cache-Control`` of a frame's map: immutable, and ``private`` under a token (RFC 9111 §3.5: a shared
        cache must not hand a response to an authorised request to anyone else)."""
        return f"{'private' if self.token is not None else 'public'}, max-age=31536000, immutable"


class VerifySettings(BaseSettings):
    model_config = _CONFIG

    store: StoreUrl = Field(description="feature store folder or s3://bucket/prefix to check")
    manifests: PathList | None = Field(None, description="also check the stored frame ids against these manifests "
                                       "(comma-separated in env)")
    splits: StrList | None = Field(None, description="the splits precompute was given (with --manifests; default: "
                                   "all)")


class MigrateSettings(BaseSettings):
    model_config = _CONFIG

    store: StoreUrl = Field(description="a version-1 feature store (no chunk checksums) to copy")
    out: StoreUrl = Field(description="the version-2 store to write (created; resumed if present)")
    progress: bool = Field(True, description="show a progress bar")
