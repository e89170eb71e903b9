"""The job message (Redis stream entry and HTTP body share it), job states, the job record, and the
check every submitted source passes.

    >>> JobSpec(source="/videos/a.mp4").model
    'x3d_xs'
    >>> JobState.DONE.terminal
    True
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Literal, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from pipelines.errors import VideoError, one_line
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS, MODELS
from pipelines.models.hf import HUB_ID
from pipelines.sources import SourcePolicy

SCHEMA_VERSION = 1


def _known_model(value: str) -> str:
    """A model of the table, or a Hugging Face model by absolute directory or hub id. Only the
    name's form is checked here: the worker reads the directory (under its allowed roots)."""
    if value.startswith("hf:"):
        target = value[3:]
        printable = target.isprintable() and len(target) <= 1024
        if not printable or not (target.startswith("/") or HUB_ID.match(target)):
            raise ValueError(f"model {value[:80]!r}: a job names a Hugging Face model by its absolute directory "
                             "(hf:/models/videomae) or a hub id (hf:org/name)")
        return value
    if value not in MODELS:
        raise ValueError(f"unknown model {value!r}; choose one of: {', '.join(MODELS)}, or hf:/DIR, hf:org/name")
    return value


ModelName = Annotated[str, AfterValidator(_known_model)]  # a model of the table, for jobs and streams
# Where results also go (services.sinks checks the kind and the rest): a URL whose scheme names the kind
SinkUrl = Annotated[str, Field(min_length=8, max_length=2000, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://")]


class JobSpec(BaseModel):
    """What to classify and how. Stream field `job` holds it as JSON (or give the fields flat)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=4096, description="local path or URL of a video")
    model: ModelName = DEFAULT_MODEL
    weights: str = DEFAULT_WEIGHTS
    topk: int = Field(5, ge=1, le=1000)
    stride_s: float | None = Field(None, gt=0)
    embeddings: bool = True
    index: bool = Field(True, description="its segments' embeddings go to the vector index (`reelflow search`); "
                                          "needs embeddings")
    runtime: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="where its forward passes run; auto: the stack's (REELFLOW_RUNTIME)")
    sinks: list[SinkUrl] = Field(default_factory=list, max_length=8,
                                 description="where its segments and its end also go: http(s)://, mqtt(s)://, file:///DIR")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    priority: int = 0
    schema_version: int = SCHEMA_VERSION
    trace: dict[str, str] | None = Field(None, description="W3C trace context (traceparent) of the submitter")

    @field_validator("schema_version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is newer than this worker's ({SCHEMA_VERSION}); upgrade reelflow")
        return value


class JobState(str, enum.Enum):
    QUEUED = "queued"  # waiting in the stream or for a retry
    RUNNING = "running"  # claimed by a consumer, segments being produced
    DONE = "done"  # every segment stored
    FAILED = "failed"  # bad job or out of attempts; in the dead-letter list
    CANCELLED = "cancelled"  # stopped by the user; stored segments are kept

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobRecord(BaseModel):
    """The source of truth for a job, stored as a Redis hash."""

    job_id: str
    state: JobState
    spec: JobSpec | None = None  # None for a malformed message
    attempts: int = 0
    segments_done: int = 0
    segments_total: int | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_hash(cls, job_id: str, fields: dict[str, str]) -> JobRecord:
        spec = fields.get("spec")
        total = fields.get("segments_total")
        return cls(
            job_id=job_id,
            state=JobState(fields.get("state", "queued")),
            spec=JobSpec.model_validate_json(spec) if spec else None,
            attempts=int(fields.get("attempts", 0)),
            segments_done=int(fields.get("segments_done", 0)),
            segments_total=int(total) if total not in (None, "") else None,
            error=fields.get("error") or None,
            created_at=float(fields.get("created_at", 0)),
            updated_at=float(fields.get("updated_at", 0)),
        )

    def summary(self) -> dict:
        d = json.loads(self.model_dump_json(exclude={"spec"}))
        if self.spec is not None:
            d.update(source=self.spec.source, model=self.spec.model, weights=self.spec.weights)
        return d


def check_job_source(sources: SourcePolicy, source: str) -> str:
    """A job's source as the queue should get it: a local path made absolute, checked to be a file
    inside the allowed roots; a URL checked against the scheme and host policy. Refusals raise
    (SourceNotAllowed, VideoError), for the CLI and the HTTP API alike."""
    if "://" in source:
        return sources.check(source)
    try:
        path = Path(source).expanduser()
        resolved = str(path.resolve())
    except (OSError, RuntimeError, ValueError) as e:  # a NUL byte, a link loop, a name too long...
        raise VideoError(f"cannot read {source[:100]!r}: {one_line(e)}; check the path") from None
    checked = sources.check(resolved)  # the roots first: say nothing of files outside
    if not path.is_file():
        raise VideoError(f"{source!r} is not a file; check the path")
    return checked
