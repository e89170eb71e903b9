"""Every setting of the control plane, read from the environment in one place.

    >>> settings = Settings.from_env()
    >>> settings.redis_url is None or settings.redis_url.startswith(("redis", "unix"))
    True

| variable | default | meaning |
|---|---|---|
| REELFLOW_REDIS_URL | (embedded) | redis://, rediss:// (TLS) or unix:// URL; unset: the embedded server under the home |
| REELFLOW_HOME | ~/.local/share/reelflow | embedded Redis data and append-only file, logs |
| REELFLOW_LEASE_S | 60 | a claimed job is reclaimed when its consumer is silent this long |
| REELFLOW_MAX_ATTEMPTS | 3 | deliveries in a row without a new segment before a job goes to the dead-letter list |
| REELFLOW_RETRY_BASE_S | 2 | first retry delay; doubles each attempt, with jitter |
| REELFLOW_RESULT_TTL_S | 604800 | finished jobs and their segments expire after this (7 days) |
| REELFLOW_BATCH_SIZE | auto | most clips per forward pass on a model replica (services/batcher.py); auto: the fastest of 1, 2, 4, 8, 16, timed by the first replica on a machine and kept (services/batch_rates.py) |
| REELFLOW_BATCH_WAIT_S | 0.02 | how long an idle forward lane waits to fill a batch |
| REELFLOW_PIPELINE | auto | fused: model replicas decode their own jobs (CPU: no clip leaves its process); split: decoder actors feed the replicas (GPU replicas); auto: fused on CPU |
| REELFLOW_DECODERS | 1 | decoder actors per `up` (split pipeline) |
| REELFLOW_JOBS_PER_DECODER | 4 | jobs a decoder (fused: a model replica) works on at once: while one job opens its video or waits for the model, the others decode |
| REELFLOW_DECODER_CPUS | 0.5 | CPUs Ray reserves per decoder actor |
| REELFLOW_REPLICA_CPUS | 0.5 | CPUs Ray reserves per model replica (several models fit on a laptop) |
| REELFLOW_DECODER_THREADS | 0 | FFmpeg decoding threads per job in a decoder actor (0: one per core) |
| REELFLOW_REPLICA_THREADS | (all cores) | cores a model replica's forward passes use (Ray alone would give a fractional-CPU actor one) |
| REELFLOW_FORWARD_THREADS | 1 | torch threads per forward pass on a CPU replica: it runs REPLICA_THREADS / FORWARD_THREADS passes at once (lanes; a small model's convolutions do not spread well over threads) |
| REELFLOW_CLIP_FORMAT | auto | what decoders send replicas: float32 model input, or uint8 crop taps finished on the replica (auto: uint8 for a GPU replica) |
| REELFLOW_PRECISION | float32 | float32 (the reference's numbers) or half (autocast: float16 on a GPU, bfloat16 on a CPU; approximate) |
| REELFLOW_STREAM_CPUS | 0.25 | CPUs Ray reserves for the actor that reads an `up`'s live streams |
| REELFLOW_MAX_STREAMS | 32 | live streams one `up` reads at most (others wait for another worker) |
| REELFLOW_MIN_REPLICAS | 1 | replicas per model when idle |
| REELFLOW_MAX_REPLICAS | 1 | autoscaling limit of replicas per model (scaled on ongoing requests and the job backlog); a replica uses all its node's cores, so raise it on a cluster, where new replicas get nodes of their own |
| REELFLOW_JOBS_PER_REPLICA | 2 | backlog jobs per model replica the autoscaler aims at |
| REELFLOW_REPLICA_GPUS | 0 | GPUs per model replica (fractions share a GPU, e.g. 0.5) |
| REELFLOW_API_TOKEN | (none) | bearer token the HTTP API requires; unset: no auth (the API binds to loopback) |
| REELFLOW_API_HOST | 127.0.0.1 | address the HTTP API listens on (`reelflow up --http-port`) |
| REELFLOW_API_MAX_BODY | 65536 | largest HTTP request body, bytes |
| REELFLOW_DEPLOY_TIMEOUT_S | 300 | a model whose replicas are not running by then fails its job (retried later) |
| REELFLOW_ALLOWED_ROOTS | (any) | colon-separated directories job sources must lie under |
| REELFLOW_ALLOWED_URL_HOSTS | (any) | comma-separated hosts http(s) job sources may come from |
| REELFLOW_MAX_PIXELS | 8294400 | largest width x height a job's video may have (3840x2160) |
| REELFLOW_MAX_DURATION_S | 14400 | longest video a job may have |
| REELFLOW_MAX_BYTES | 53687091200 | largest file a job may read (50 GiB) |
| REELFLOW_MAX_FRAMES | 1728000 | most frames a job's video may have (4 h at 120 fps), checked while decoding too |
| REELFLOW_PRIVATE_URLS | streams | URLs on private/loopback addresses: allowed for `streams` (cameras), `all` sources, or `none`; link-local and cloud-metadata addresses never |
| REELFLOW_ALLOW_DEVICES | 0 | 1 or true: live streams may read capture devices `/dev/videoN` (Video4Linux2); nothing else under /dev ever |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.sources import SourcePolicy
from services.env_settings import EnvSettings, SettingsError, read_env  # noqa: F401  (SettingsError: re-exported)

MAX_AUTO_BATCH = 16


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    home: Path
    lease_s: float
    max_attempts: int
    retry_base_s: float
    result_ttl_s: int
    batch_size: int = 0  # 0: auto, measured by each replica when it starts
    batch_wait_s: float = 0.02
    pipeline: str = "auto"
    decoders: int = 1
    jobs_per_decoder: int = 4
    decoder_cpus: float = 0.5
    replica_cpus: float = 0.5
    decoder_threads: int = 0  # 0: FFmpeg picks, one per core
    replica_threads: int = 0  # 0: one per core of the node the replica runs on
    forward_threads: int = 1
    clip_format: str = "auto"
    precision: str = "float32"
    stream_cpus: float = 0.25
    max_streams: int = 32
    max_replicas: int = 1
    min_replicas: int = 1
    jobs_per_replica: int = 2
    replica_gpus: float = 0.0
    api_token: str | None = field(default=None, repr=False)
    api_host: str = "127.0.0.1"
    api_max_body: int = 65536
    deploy_timeout_s: float = 300.0
    allow_devices: bool = False  # REELFLOW_ALLOW_DEVICES, also in `sources` (where it is enforced)
    sources: SourcePolicy = field(default_factory=SourcePolicy)

    def __post_init__(self):
        if self.min_replicas > self.max_replicas:
            raise SettingsError(f"REELFLOW_MIN_REPLICAS={self.min_replicas} is above REELFLOW_MAX_REPLICAS="
                                f"{self.max_replicas}; lower it or raise the maximum")

    @property
    def batch_limit(self) -> int:
        """The largest batch a replica may form (what `auto` may choose at most)."""
        return self.batch_size or MAX_AUTO_BATCH

    @classmethod
    def from_env(cls) -> Settings:
        """The REELFLOW_* environment (read with pydantic-settings: services.env_settings)."""
        env = read_env()
        return cls(
            redis_url=env.redis_url, home=env.home, lease_s=env.lease_s, max_attempts=env.max_attempts,
            retry_base_s=env.retry_base_s, result_ttl_s=env.result_ttl_s,
            batch_size=0 if env.batch_size == "auto" else env.batch_size, batch_wait_s=env.batch_wait_s,
            pipeline=env.pipeline, decoders=env.decoders, jobs_per_decoder=env.jobs_per_decoder,
            decoder_cpus=env.decoder_cpus, replica_cpus=env.replica_cpus,
            decoder_threads=env.decoder_threads or 0, replica_threads=env.replica_threads or 0,
            forward_threads=env.forward_threads,
            clip_format=env.clip_format, precision=env.precision, stream_cpus=env.stream_cpus,
            max_streams=env.max_streams, max_replicas=env.max_replicas, min_replicas=env.min_replicas,
            jobs_per_replica=env.jobs_per_replica, replica_gpus=env.replica_gpus, api_token=env.api_token,
            api_host=env.api_host, api_max_body=env.api_max_body, deploy_timeout_s=env.deploy_timeout_s,
            allow_devices=env.allow_devices in ("1", "true"), sources=_source_policy(env),
        )


def _source_policy(env: EnvSettings) -> SourcePolicy:
    return SourcePolicy(
        allowed_roots=tuple(Path(r).expanduser().resolve() for r in env.allowed_roots.split(":") if r) or None,
        url_hosts=frozenset(h.strip() for h in env.allowed_url_hosts.split(",") if h.strip()) or None,
        max_pixels=env.max_pixels,
        max_duration_s=env.max_duration_s,
        max_bytes=env.max_bytes,
        max_frames=env.max_frames,
        allow_devices=env.allow_devices in ("1", "true"),
        private_urls=env.private_urls,
    )
