"""The REELFLOW_* environment, read and validated with pydantic-settings.

Every process reads the same variables — `reelflow up`, the Ray actors and Serve deployments it
starts (they inherit its environment), a KubeRay pod (its ConfigMap and Secret) — so settings reach
the deployments without being passed around. A bad value is one line naming the variable.

    >>> EnvSettings(lease_s=5).lease_s
    5.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.errors import ReelflowError


class SettingsError(ReelflowError):
    """A REELFLOW_ variable with a value reelflow cannot use."""


class EnvSettings(BaseSettings):
    """One field per REELFLOW_<NAME> variable; services.settings documents each."""

    model_config = SettingsConfigDict(env_prefix="REELFLOW_", env_ignore_empty=True, extra="ignore", frozen=True)

    redis_url: str | None = None
    home: Path = Path.home() / ".local" / "share" / "reelflow"
    lease_s: PositiveFloat = 60.0
    max_attempts: PositiveInt = 3
    retry_base_s: PositiveFloat = 2.0
    result_ttl_s: PositiveInt = 7 * 24 * 3600
    batch_size: Literal["auto"] | PositiveInt = "auto"
    batch_wait_s: PositiveFloat = 0.02
    pipeline: Literal["auto", "fused", "split"] = "auto"
    decoders: PositiveInt = 1
    jobs_per_decoder: PositiveInt = 4
    decoder_cpus: PositiveFloat = 0.5
    replica_cpus: PositiveFloat = 0.5
    decoder_threads: PositiveInt | None = None  # unset: one per core
    replica_threads: PositiveInt | None = None
    forward_threads: PositiveInt = 1
    clip_format: Literal["auto", "float32", "uint8"] = "auto"
    precision: Literal["float32", "half"] = "float32"
    stream_cpus: PositiveFloat = 0.25
    max_streams: PositiveInt = 32
    max_replicas: PositiveInt = 1
    min_replicas: PositiveInt = 1
    jobs_per_replica: PositiveInt = 2
    replica_gpus: float = Field(0.0, ge=0)
    api_token: str | None = Field(None, repr=False)
    api_host: str = "127.0.0.1"
    api_max_body: PositiveInt = 65536
    deploy_timeout_s: PositiveFloat = 300.0
    allow_devices: Literal["0", "1", "false", "true"] = "0"
    allowed_roots: str = ""  # colon-separated directories
    allowed_url_hosts: str = ""  # comma-separated hosts
    private_urls: Literal["streams", "all", "none"] = "streams"
    max_pixels: PositiveInt = 3840 * 2160
    max_duration_s: PositiveFloat = 4 * 3600
    max_bytes: PositiveInt = 50 * 2**30
    max_frames: PositiveInt = 4 * 3600 * 120

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


def read_env() -> EnvSettings:
    """The environment's settings, or SettingsError naming the first bad variable."""
    try:
        return EnvSettings()
    except ValidationError as e:
        errors = e.errors()
        field = errors[0]["loc"][0] if errors[0]["loc"] else "?"
        reasons = " or ".join(dict.fromkeys(err["msg"].removeprefix("Value error, ").lower()
                                            for err in errors if err["loc"] and err["loc"][0] == field))
        raise SettingsError(f"REELFLOW_{str(field).upper()}={errors[0].get('input')!r}: {reasons}; "
                            "unset it or fix it") from None
