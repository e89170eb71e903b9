"""Every setting of the control plane: one class, one field per REELFLOW_<NAME> variable, each with
its description. The README's configuration table is generated from it (`python -m services.settings`)
and a test checks that the two agree.

Every process reads the same variables — `reelflow up`, the Ray actors and Serve deployments it
starts (they inherit its environment), a KubeRay pod (its ConfigMap and Secret) — so settings reach
the deployments without being passed around. A bad value is one line naming the variable.

    >>> Settings(lease_s=5).lease_s
    5.0
    >>> Settings().batch_limit
    16
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.errors import ReelflowError
from pipelines.sources import SourcePolicy

MAX_AUTO_BATCH = 16  # the largest batch `REELFLOW_BATCH_SIZE=auto` may choose
ENV_PREFIX = "REELFLOW_"


class SettingsError(ReelflowError):
    """A REELFLOW_ variable with a value reelflow cannot use."""


def _doc(description: str, default_text: str | None = None) -> dict:
    """A field's README entry: its meaning, and its default as the README shows it (when the value
    itself would not read well)."""
    return {"description": description, "json_schema_extra": {"shown_default": default_text} if default_text else None}


class Settings(BaseSettings):
    """The REELFLOW_* environment, read and validated once per process (`Settings.from_env()`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    redis_url: str | None = Field(None, **_doc(
        "`redis://`, `rediss://` (TLS) or `unix://` URL, password included; unset: the embedded server",
        "(embedded)"))
    home: Path = Field(Path.home() / ".local" / "share" / "reelflow", **_doc(
        "the embedded Redis's data, append-only file and log (`--home` does the same)", "`~/.local/share/reelflow`"))
    lease_s: PositiveFloat = Field(60.0, **_doc("a job whose worker is silent this long is reclaimed"))
    max_attempts: PositiveInt = Field(3, **_doc("deliveries in a row without a new segment before a job is "
                                                "dead-lettered"))
    retry_base_s: PositiveFloat = Field(2.0, **_doc("first retry delay; doubles per attempt, with jitter"))
    result_ttl_s: PositiveInt = Field(7 * 24 * 3600, **_doc("finished jobs and their results expire after this "
                                                            "(seconds; 7 days)"))
    results_stream_max: PositiveInt = Field(100_000, **_doc(
        "entries the results stream `reelflow:results` keeps (about; the oldest are trimmed first)"))
    batch_size: int = Field(0, ge=0, **_doc(
        "most clips per forward pass on a model replica; `auto`: the first replica on a machine times batches of "
        "1, 2, 4, 8, 16 and keeps the fastest; later replicas read its timings from "
        "`~/.cache/reelflow/batch-rates.json` (a week; delete it to time again)", "`auto`"))
    batch_wait_s: PositiveFloat = Field(0.02, **_doc(
        "how long an idle forward lane waits to fill a batch (a busy replica's batches fill while its lanes work)"))
    pipeline: Literal["auto", "fused", "split"] = Field("auto", **_doc(
        "`fused`: model replicas decode their own jobs (no clip leaves its process — the fast shape on CPUs); "
        "`split`: decoder actors feed the replicas (for GPU replicas fed by CPU nodes); `auto`: fused on CPU"))
    decoders: PositiveInt = Field(1, **_doc("decoder actors per `up`, spread over the cluster's nodes (split pipeline)"))
    jobs_per_decoder: PositiveInt = Field(4, **_doc(
        "jobs decoded at once per decoder (fused: per model replica): while one job opens its video or waits for "
        "the model, the others decode"))
    decoder_cpus: PositiveFloat = Field(0.5, **_doc("CPUs Ray reserves per decoder actor"))
    replica_cpus: PositiveFloat = Field(0.5, **_doc("CPUs Ray reserves per model replica (several models fit on a "
                                                    "laptop)"))
    decoder_threads: int = Field(0, ge=0, **_doc("FFmpeg threads per decoded job (0: one per core)"))
    replica_threads: int = Field(0, ge=0, **_doc(
        "cores a model replica's forward passes use (0: all of its node's; Ray alone would give a fractional-CPU "
        "actor one thread)"))
    forward_threads: PositiveInt = Field(1, **_doc(
        "torch threads per forward pass on a CPU replica, which runs `REPLICA_THREADS / FORWARD_THREADS` passes at "
        "once (lanes); raise it for lower latency of a big model on an idle replica"))
    clip_format: Literal["auto", "float32", "uint8"] = Field("auto", **_doc(
        "what decoders send replicas: `float32` model input, or `uint8` crop taps the replica blends and "
        "normalizes itself (`auto`: `uint8` for a GPU replica) — the same numbers either way"))
    precision: Literal["float32", "half"] = Field("float32", **_doc(
        "`half`: autocast (float16 on a GPU, bfloat16 on a CPU) — approximate"))
    runtime: Literal["auto", "torch", "openvino"] = Field("auto", **_doc(
        "where models' forward passes run: `openvino` (CPU; 2-4x PyTorch eager here, the same numbers), `torch`, "
        "or `auto`: OpenVINO on a CPU where it is installed, else torch; a model OpenVINO cannot convert with "
        "parity runs on torch under `auto`, with a note in `up` and `status`"))
    model_cache: Path | None = Field(None, **_doc(
        "where models converted for a runtime are kept (once per model, weights, runtime version and input shape)",
        "`$REELFLOW_HOME/models`"))
    stream_cpus: PositiveFloat = Field(0.25, **_doc("CPUs Ray reserves for the actor that reads an `up`'s live "
                                                    "streams"))
    stream_latency_s: PositiveFloat = Field(1.0, **_doc(
        "live streams' latency target (a window's last frame to its result): a window not at the model by then is "
        "dropped and counted (in `dropped`), so that an overloaded stack stays near its target with drops spread "
        "over its streams"))
    stream_decode_threads: int = Field(0, ge=0, **_doc(
        "live streams decoding at once in one process (0: one fewer than its machine's cores, at least 2): "
        "the other cores stay with the model; readers that cannot keep up skip to a keyframe, counted"))
    stream_cheap_decoding: bool = Field(True, **_doc(
        "a live stream's reader half the latency target behind decodes its next GOPs (10 s at least) without "
        "the deblocking filter (FFmpeg's skip_loop_filter: 20-27% less CPU a frame at 640x360, PSNR 34-40 dB "
        "against the filtered frames) before it falls the whole target behind and skips windows; counted "
        "(cheap_gops); 20 cameras of 640x360 on 2 cores dropped 27-76% as many windows, in three turns "
        "(benchmarks/streams.md). 0: always decode in full"))
    stream_shed: bool = Field(False, **_doc(
        "live streams shed overload evenly (pipelines.shedding.Shedding): once many readers skip to a keyframe for "
        "being behind, every stream leaves the same share of its GOPs undecoded, in runs, and readers take turns "
        "skipping; far less decoding wasted on windows dropped anyway and a lower p95 at 40 cameras on 2 cores "
        "(1.5 against 1.7 s), but not clearly more windows, and a few drops near capacity (benchmarks/streams.md)"))
    max_streams: PositiveInt = Field(64, **_doc("live streams one `up` reads at most (more wait for another worker)"))
    min_replicas: PositiveInt = Field(1, **_doc("replicas per model when idle"))
    max_replicas: PositiveInt = Field(1, **_doc(
        "autoscaling limit of replicas per model (on ongoing requests and the job backlog); a replica uses all its "
        "node's cores, so raise it on a cluster (the k8s config: 4), where new replicas get nodes of their own"))
    jobs_per_replica: PositiveInt = Field(2, **_doc("backlog jobs per model replica the autoscaler aims at"))
    replica_gpus: float = Field(0.0, ge=0, **_doc("GPUs per model replica (fractions share a device)"))
    api_token: str | None = Field(None, repr=False, **_doc(
        "bearer token the HTTP API requires (unset: none; the API binds to loopback)", "(none)"))
    api_host: str = Field("127.0.0.1", **_doc("address the HTTP API listens on (`reelflow up --http-port`)"))
    api_max_body: PositiveInt = Field(65536, **_doc("largest HTTP request body (bytes)"))
    deploy_timeout_s: PositiveFloat = Field(300.0, **_doc("replicas not running by then fail the job's attempt "
                                                          "(retried)"))
    ray_start_timeout_s: PositiveFloat = Field(120.0, **_doc(
        "a local Ray whose node has not come up in Ray's 30 s is stopped and started again until this many seconds "
        "have passed (a busy machine); then `up`/`process` stop with one line"))
    sinks: str = Field("", **_doc(
        "space- or comma-separated sink URLs every job and stream also delivers to: `http(s)://` webhook, "
        "`mqtt(s)://[user:pass@]host:port[/prefix]`, `file:///DIR`", "(none)"))
    sink_secret: str | None = Field(None, repr=False, **_doc(
        "the key webhooks are signed with (HMAC-SHA256, header `Reelflow-Signature`); webhooks need it", "(none)"))
    metrics: bool = Field(True, **_doc(
        "0: record no reelflow metrics in the stack's processes (the bench's comparison of the bulk path with and "
        "without them); `--metrics-port` then serves Ray's alone", "1"))
    sink_embeddings: bool = Field(False, **_doc("1: sinks get each segment's embedding too (kilobytes each)", "0"))
    sink_backlog: PositiveInt = Field(10_000, **_doc(
        "messages a sink may have waiting before live streams' messages to it are dropped (and counted); jobs' "
        "are never dropped"))
    sink_retry_s: PositiveFloat = Field(3600.0, **_doc(
        "how long a sink's batch is retried (backoff up to a minute, with jitter) before it goes to the sinks' "
        "dead-letter list"))
    sink_batch: PositiveInt = Field(100, **_doc("most messages per delivery (a webhook POST, a burst of MQTT "
                                                "publishes)"))
    index: bool = Field(True, **_doc(
        "0: index no segment's embedding for `reelflow search` (jobs and streams opt out one by one with "
        "`--no-index`)", "1"))
    index_uri: str | None = Field(None, **_doc(
        "where the vector index lives: a directory, or what LanceDB connects to (`s3://bucket/path`, `gs://...`, "
        "`db://...`) so that a cluster's workers share one", "`$REELFLOW_HOME/index`"))
    index_backlog: PositiveInt = Field(20_000, **_doc(
        "segments that may wait in Redis for the indexer (about 8 KiB each) before new ones skip the index (and "
        "are counted); storing results never waits for the index"))
    clips_dir: Path | None = Field(None, **_doc(
        "where live streams' evidence clips are written (a directory every worker and the API can reach)",
        "`$REELFLOW_HOME/clips`"))
    clips_max_age_s: PositiveFloat = Field(7 * 24 * 3600, **_doc("clips older than this are deleted (seconds; 7 days)"))
    clips_max_bytes: PositiveInt = Field(10 * 2**30, **_doc(
        "most bytes of clips kept (per clips directory); past it the oldest are deleted first", "10 GiB"))
    allowed_roots: str = Field("", **_doc(
        "colon-separated directories job sources must lie under (links resolved)", "the stack's working directory"))
    allowed_url_hosts: str = Field("", **_doc("comma-separated hosts `http(s)://` job sources may come from", "(any)"))
    private_urls: Literal["streams", "all", "none"] = Field("streams", **_doc(
        "URLs on private or loopback addresses: allowed for `streams` (cameras), `all` sources, or `none`; "
        "link-local and cloud-metadata addresses never"))
    allow_devices: bool = Field(False, **_doc("1: live streams may read capture devices `/dev/videoN`", "0"))
    max_pixels: PositiveInt = Field(3840 * 2160, **_doc("largest width × height of a job's video (3840 × 2160)"))
    max_duration_s: PositiveFloat = Field(4 * 3600, **_doc("longest video a job may have (seconds)"))
    max_bytes: PositiveInt = Field(50 * 2**30, **_doc("largest file a job may read", "50 GiB"))
    max_frames: PositiveInt = Field(4 * 3600 * 120, **_doc("most frames a job's video may have (4 h at 120 fps)"))

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("batch_size", mode="before")
    @classmethod
    def _auto_batch(cls, value):
        return 0 if value == "auto" else value

    @field_validator("decoder_threads", "replica_threads", mode="before")
    @classmethod
    def _unset_threads(cls, value):
        return 0 if value is None else value

    @model_validator(mode="after")
    def _replica_range(self) -> Settings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"REELFLOW_MIN_REPLICAS={self.min_replicas} is above REELFLOW_MAX_REPLICAS="
                             f"{self.max_replicas}; lower it or raise the maximum")
        return self

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """The environment's settings (`overrides` win), or SettingsError naming the first bad variable."""
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(_env_problem(e)) from None

    def replace(self, **changes) -> Settings:
        """A copy with some fields changed (validated like the environment's)."""
        try:
            return type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as e:
            raise SettingsError(_env_problem(e)) from None

    @property
    def model_cache_dir(self) -> Path:
        return self.model_cache or self.home / "models"

    @property
    def clips_location(self) -> Path:
        return (self.clips_dir or self.home / "clips").expanduser()

    @property
    def index_location(self) -> str:
        return self.index_uri or str(self.home / "index")

    def runtime_for(self, requested: str | None) -> str:
        """A job's runtime: its own, or (`auto`, unset) this stack's."""
        return requested if requested and requested != "auto" else self.runtime

    @property
    def batch_limit(self) -> int:
        """The largest batch a replica may form (what `auto` may choose at most)."""
        return self.batch_size or MAX_AUTO_BATCH

    @cached_property
    def sources(self) -> SourcePolicy:
        """Where job and stream sources may come from, and how large they may be."""
        return SourcePolicy(
            allowed_roots=tuple(Path(r).expanduser().resolve() for r in self.allowed_roots.split(":") if r) or None,
            url_hosts=frozenset(h.strip() for h in self.allowed_url_hosts.split(",") if h.strip()) or None,
            max_pixels=self.max_pixels, max_duration_s=self.max_duration_s, max_bytes=self.max_bytes,
            max_frames=self.max_frames, allow_devices=self.allow_devices, private_urls=self.private_urls)


    @property
    def sink_urls(self) -> list[str]:
        """REELFLOW_SINKS as a list (a URL holds neither spaces nor, here, commas)."""
        return [u for u in self.sinks.replace(",", " ").split() if u]


def _env_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a check across fields: its message names the variables
        return first["msg"].removeprefix("Value error, ")
    field = first["loc"][0]
    reasons = " or ".join(dict.fromkeys(err["msg"].removeprefix("Value error, ").lower()
                                        for err in error.errors() if err["loc"] and err["loc"][0] == field))
    return f"{ENV_PREFIX}{str(field).upper()}={first.get('input')!r}: {reasons}; unset it or fix it"


def settings_for(home: str | None) -> Settings:
    """The environment's settings, with `--home` (when given) in place of REELFLOW_HOME."""
    return Settings.from_env(home=Path(home).expanduser()) if home else Settings.from_env()


def default_allowed_roots(files: list[str] = (), models: list[str] = ()) -> str:
    """A stack opens local videos (and Hugging Face model directories, `hf:DIR`) only under
    REELFLOW_ALLOWED_ROOTS; unset, it defaults to the directory the stack was started in plus the
    files and models named on its command line. Set in this process's environment, so that every
    Ray process it starts follows the same rule."""
    if not os.environ.get("REELFLOW_ALLOWED_ROOTS", "").strip():
        named = [str(Path(f).expanduser().resolve()) for f in files if "://" not in f]
        named += [m[3:] for m in models if m.startswith("hf:/")]
        os.environ["REELFLOW_ALLOWED_ROOTS"] = ":".join([os.getcwd(), *named])
    return os.environ["REELFLOW_ALLOWED_ROOTS"]


def markdown_table() -> str:
    """The README's configuration table of the REELFLOW_* variables, from the fields above."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        shown = (field.json_schema_extra or {}).get("shown_default")
        if shown is None:
            shown = f"`{field.default}`" if isinstance(field.default, str) else str(field.default)
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m services.settings: the README's table
    sys.stdout.write(markdown_table() + "\n")
