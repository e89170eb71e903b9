"""A worker as one thing with a lifetime, and the stack around it: the one place they are wired.

`Runtime` is the job consumer and the live-stream manager around one pipeline: `reelflow up` runs it
in the foreground, `reelflow process` and the Serve application's `JobConsumer` on a thread.
`LocalStack` is what `up` and `process` add around it: the stack's Redis, the pipeline's lifetime.

    >>> stack = LocalStack(settings, make_pipeline)                  # doctest: +SKIP
    >>> stack.runtime.run()            # until stack.runtime.stop() (a signal handler, say)
    >>> stack.close()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from pipelines.errors import ReelflowError, one_line
from services.settings import Settings
from services.store.connection import StackRedis
from services.store.queue import JobQueue
from services.worker.consumer import Worker
from services.worker.pipeline import Pipeline
from services.worker.stream_manager import StreamManager

log = logging.getLogger("reelflow.worker")

JOIN_S = 60.0  # how long `close` waits for the consumer thread (it hands its jobs back first)


class Runtime:
    def __init__(self, queue: JobQueue, pipeline: Pipeline, redis_url: str, settings: Settings,
                 consumer: str | None = None, streams: bool = True):
        """`streams`: also take live streams (`reelflow process`, a one-shot bulk run, does not)."""
        self.pipeline = pipeline
        self.worker = Worker(queue, pipeline, consumer)
        self.streams = StreamManager(queue.stream_registry(), self.worker.consumer, pipeline, redis_url,
                                     settings.max_streams) if streams else None
        self._thread: threading.Thread | None = None

    @property
    def consumer(self) -> str:
        return self.worker.consumer

    def run(self, block_ms: int = 1000) -> None:
        """Claim jobs and streams in this thread until `stop()`; then hand back what is in hand."""
        if self.streams is not None:
            self.streams.start()
        try:
            self.worker.run(block_ms=block_ms)
        finally:
            if self.streams is not None:
                self.streams.close()

    def start(self, block_ms: int = 200) -> Runtime:
        """`run` on a thread of its own; returns at once."""
        self._thread = threading.Thread(target=self.run, kwargs={"block_ms": block_ms}, daemon=True,
                                        name="reelflow-consumer")
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Take no more jobs; the running ones hand themselves back (safe from a signal handler)."""
        self.worker.stop.set()

    def close(self) -> None:
        """Stop, and wait for the consumer thread (from `start`) to have handed its jobs back."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_S)
            if self._thread.is_alive():
                log.warning("the consumer thread did not stop within %.0f s", JOIN_S)


class LocalStack:
    """What `reelflow up` and `reelflow process` run in their process: the stack's Redis (REELFLOW_REDIS_URL's,
    or the embedded server under the home, started if need be), a pipeline, and a worker `Runtime` on
    them; `close` takes them down in reverse.

    `make_pipeline(redis_url)` builds the pipeline: the in-process one, or the Ray backend's (its one
    factory, which the caller chooses: this layer knows nothing of Ray).
    """

    def __init__(self, settings: Settings, make_pipeline: Callable[[str], Pipeline], streams: bool = True):
        self.settings = settings
        self.store = StackRedis.open(settings)
        self.pipeline: Pipeline | None = None
        self.runtime: Runtime | None = None
        try:
            # Ray processes started from here (Serve's controller: the backlog autoscaler; the API) find Redis too
            os.environ["REELFLOW_REDIS_URL"] = self.store.url
            self.pipeline = make_pipeline(self.store.url)
            self.runtime = Runtime(self.store.queue, self.pipeline, self.store.url, settings, streams=streams)
            if self.store.started_here:  # the embedded server is this stack's: restart it if it stops
                self.store.keep_alive()
        except BaseException:
            self.close(keep_redis=not self.store.started_here)
            raise

    @property
    def queue(self) -> JobQueue:
        return self.store.queue

    def prepare(self, models: list[str], weights: str) -> list[str]:
        """Load (deploy) the models now, so their first jobs do not wait; the problems, one line each."""
        problems = []
        for model in models:
            try:
                self.pipeline.prepare(model, weights)
            except ReelflowError as e:
                problems.append(one_line(e))
        return problems

    def close(self, keep_redis: bool = False) -> None:
        """Stop the worker (its jobs handed back), the pipeline, and the embedded Redis unless `keep_redis`."""
        try:
            if self.runtime is not None:
                self.runtime.close()
            if self.pipeline is not None:
                self.pipeline.shutdown()
        finally:
            self.store.close(keep=keep_redis)
