"""A worker as one thing with a lifetime: the job consumer and the live-stream manager around one
pipeline. The one place a worker is wired — `reelflow up` runs it in the foreground, `reelflow
process` and the Serve application's `JobConsumer` on a thread.

    >>> runtime = Runtime(queue, pipeline, redis_url, settings)      # doctest: +SKIP
    >>> runtime.run()                  # until runtime.stop() (a signal handler, say)
    >>> runtime.start(); ...; runtime.close()                        # or on a thread
"""

from __future__ import annotations

import logging
import threading

from services.settings import Settings
from services.store.queue import JobQueue
from services.store.streams import StreamRegistry
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
        self.streams = StreamManager(StreamRegistry(queue.r), self.worker.consumer, pipeline, redis_url,
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
