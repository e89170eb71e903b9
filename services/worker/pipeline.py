"""The contract between the job consumer and what classifies: a `Pipeline`.

Two implement it: `services.worker.in_process.InProcessPipeline` (the data plane in this process)
and the Ray backend's `RayPipeline` (decoder actors and Serve model replicas), which the rest of
reelflow gets only from `services.ray_backend.start_pipeline`. The worker, its stream manager and
`reelflow up` use nothing else of either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from services.store.jobs import JobSpec
from services.store.streams import StreamSpec


class StreamHandle(Protocol):
    """A live stream running somewhere (a thread, a Ray actor)."""

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


class Pipeline(Protocol):
    @property
    def capacity(self) -> int:
        """Jobs to run at once now (it may change as model replicas scale)."""

    def prepare(self, model: str, weights: str, runtime: str = "auto") -> None:
        """Load (or deploy) a model now, so its first job does not wait; a bad model raises ReelflowError."""

    def segments(self, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        """The job's number of segments, then a result dict per segment whose index is not in `skip`, in order."""

    def is_permanent(self, error: BaseException) -> bool:
        """True for the job's own fault (unreadable, not a video, bad weights): no retry helps."""

    def start_stream(self, spec: StreamSpec, redis_url: str, owner: str) -> StreamHandle:
        """Start reading and classifying a live stream; its results go to Redis at `redis_url`, published
        only while the stream's lease is still held under `owner` (the worker's value for this hold)."""

    def describe(self) -> list[dict]:
        """The models it serves: [{model, weights, replicas, serving}], for the worker's presence."""

    def lost(self) -> str | None:
        """Why the pipeline can serve nothing any more (its Ray node died, say), or None: asked every
        couple of seconds by `reelflow up`, which then restarts it (or exits, if it cannot)."""

    @property
    def restartable(self) -> bool:
        """Whether a lost pipeline can be made again from this process (a Ray it started: yes; a
        cluster it joined: no, its supervisor must restart it)."""

    def metrics_url(self) -> str | None:
        """Where the metrics its other processes record are exported (a Ray node's metrics agent),
        for `up --metrics-port` to serve with its own; None when they are all in this process."""

    def shutdown(self) -> None:
        """Release what it started (Ray, replicas of a local cluster)."""
