"""A worker as one thing with a lifetime, and the stack around it: the one place they are wired.

`Runtime` is the job consumer and the live-stream manager around one pipeline: `reelflow up` runs it
in the foreground, `reelflow process` and the Serve application's `JobConsumer` on a thread.
`LocalStack` is what `up` and `process` add around it: the stack's Redis, the pipeline's lifetime
(`up` runs it under `LocalStack.run`, which makes the pipeline again when it is lost: a Ray node
that died under it).

    >>> stack = LocalStack(settings, make_pipeline)                  # doctest: +SKIP
    >>> stack.run()                    # until stack.stop() (a signal handler, say)
    >>> stack.close()
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from pipelines.errors import ReelflowError, one_line
from services import metrics
from services.settings import Settings
from services.index.indexer import Indexer
from services.index.vectors import VectorIndex
from services.sinks.publisher import SinkPublisher
from services.store.connection import StackRedis
from services.store.index_outbox import IndexOutbox
from services.store.leases import Leases
from services.store.queue import JobQueue
from services.worker.consumer import STOP_GRACE_S, Worker, default_consumer_name
from services.worker.pipeline import Pipeline
from services.worker.stream_manager import StreamManager

log = logging.getLogger("reelflow.worker")

JOIN_S = 60.0  # how long `close` waits for the consumer thread (it hands its jobs back first)
SHUTDOWN_S = 30.0  # how long `close` waits for the pipeline to shut down
WATCH_EVERY_S = 2.0  # how often `LocalStack.run` asks whether the pipeline is lost


class Runtime:
    def __init__(self, queue: JobQueue, pipeline: Pipeline, redis_url: str, settings: Settings,
                 consumer: str | None = None, streams: bool = True):
        """`streams`: also take live streams (`reelflow process`, a one-shot bulk run, does not)."""
        self.pipeline = pipeline
        if not settings.metrics:
            metrics.use(metrics.OFF)
        self.worker = Worker(queue, pipeline, consumer)
        self.streams = StreamManager(queue.stream_registry(), self.worker.consumer, pipeline, redis_url,
                                     settings.max_streams) if streams else None
        self.sinks = SinkPublisher(queue.outboxes, settings, self.worker.consumer)
        self.indexer = Indexer(IndexOutbox(queue.r), VectorIndex(settings.index_location), settings,
                               self.worker.consumer, Leases(queue.r)) if settings.index else None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended `run`, if it did not end cleanly
        # read at each scrape from now on: `up`'s ready line comes before `run`, and a scrape right
        # after it must find them (unregistered when `run` ends)
        self._unregisters = [metrics.read_at_scrape("reelflow_queue_jobs", self._queue_depth)]
        if self.indexer is not None:
            self._unregisters.append(metrics.read_at_scrape("reelflow_index_waiting",
                                                            lambda: {"": self.indexer.outbox.backlog()}))

    @property
    def consumer(self) -> str:
        return self.worker.consumer

    def run(self, block_ms: int = 1000) -> None:
        """Claim jobs and streams in this thread until `stop()`; then hand back what is in hand."""
        if self.streams is not None:
            self.streams.start()
        self.sinks.start()
        if self.indexer is not None:
            self.indexer.start()
        try:
            self.worker.run(block_ms=block_ms)
        except BaseException as e:  # kept for whoever started this thread (`LocalStack.run` raises it)
            self.error = e
            raise
        finally:
            if self.streams is not None:
                self.streams.close()
            self.sinks.stop()
            if self.indexer is not None:
                self.indexer.stop()
            for unregister in self._unregisters:
                unregister()
            self._unregisters = []

    def _queue_depth(self) -> dict[str, float]:
        queue = self.worker.queue
        depth = queue.depth()
        return {"waiting": depth["waiting"], "claimed": depth["pending"], "retrying": depth["retrying"],
                "dead_lettered": len(queue.dead_letters())}

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

    def join(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the consumer thread (from `start`); True if it ended."""
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        return not self.alive()

    def close(self) -> None:
        """Stop, and wait for the consumer thread (from `start`) to have handed its jobs back."""
        self.stop()
        if not self.join(JOIN_S):
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
        self._make_pipeline, self._streams = make_pipeline, streams
        self._prepared: tuple[list[str], str] = ([], "")
        self._stopping = threading.Event()
        self.restarts = 0  # pipelines made again after one was lost
        try:
            # Ray processes started from here (Serve's controller: the backlog autoscaler; the API) find Redis too
            os.environ["REELFLOW_REDIS_URL"] = self.store.url
            self.store.queue.outboxes.set_global(settings.sink_urls)  # every job and stream delivers to these
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

    def run(self) -> None:
        """Run the worker until `stop()`. When the pipeline is lost (the Ray node it started died),
        the worker stops (its jobs go back to the queue, its streams are released; a job stuck in a
        call to the dead node is left, and taken over by the next worker), the pipeline is made
        again, its models redeployed, and a new worker carries on. A pipeline that cannot be made
        again here (a Ray cluster joined, not started) raises PipelineLost."""
        while True:
            watch = _Watch(self.pipeline)
            self.runtime.start(block_ms=1000)
            while self.runtime.alive() and watch.reason is None and not self._stopping.is_set():
                self._stopping.wait(0.5)
            watch.stop()
            if watch.reason is None:  # stopped (a signal), or the worker ended by itself (an error: raised here)
                self.runtime.close()
                if self.runtime.error is not None:
                    raise self.runtime.error
                return
            log.warning("%s; stopping the worker", watch.reason)
            self.runtime.stop()
            self.runtime.join(STOP_GRACE_S + 5)
            if self._stopping.is_set():
                return
            if not self.pipeline.restartable:
                raise PipelineLost(f"{watch.reason}; this worker joined a Ray cluster it did not start, so it stops "
                                   "here: restart it once the cluster is healthy (a supervisor does so by itself)")
            log.warning("%s; restarting Ray and redeploying (the jobs in hand went back to the queue)", watch.reason)
            self._restart()
            log.warning("the pipeline is back (restart %d); worker %s carries on", self.restarts,
                        self.runtime.consumer)

    def stop(self) -> None:
        """End `run` (safe from a signal handler): the jobs in hand go back to the queue."""
        self._stopping.set()
        if self.runtime is not None:
            self.runtime.stop()

    def _restart(self) -> None:
        self._shut_down_pipeline()
        self.restarts += 1
        handlers = _signal_handlers()  # ray.init installs its own SIGTERM handler: keep `up`'s
        try:
            self.pipeline = self._make_pipeline(self.store.url)
        finally:
            _restore(handlers)
        # a new consumer name: the old one's claims (a job stuck in a call to the dead node) are
        # taken over at once, as a dead worker's are, and any write from them is refused
        consumer = f"{default_consumer_name()}-r{self.restarts}"
        self.runtime = Runtime(self.store.queue, self.pipeline, self.store.url, self.settings, consumer=consumer,
                               streams=self._streams)
        for problem in self.prepare(*self._prepared):
            log.warning("after the restart: %s", problem)

    def prepare(self, models: list[str], weights: str) -> list[str]:
        """Load (deploy) the models now, so their first jobs do not wait; the problems, one line each."""
        self._prepared = (models, weights)
        problems = []
        for model in models:
            try:
                self.pipeline.prepare(model, weights)
            except ReelflowError as e:
                problems.append(one_line(e))
        return problems

    def close(self, keep_redis: bool = False) -> None:
        """Stop the worker (its jobs handed back), the pipeline, and the embedded Redis unless `keep_redis`.
        Neither waits for long: a pipeline whose node died can hang any call into it."""
        try:
            if self.runtime is not None:
                self.runtime.close()
            if self.pipeline is not None:
                self._shut_down_pipeline()
        finally:
            self.store.close(keep=keep_redis)

    def _shut_down_pipeline(self) -> None:
        """`pipeline.shutdown()`, waited for SHUTDOWN_S at most (a dead node can hang it)."""
        def shut_down():
            try:
                self.pipeline.shutdown()
            except Exception:  # half of it is dead already
                log.warning("the pipeline did not shut down cleanly", exc_info=True)
        done = threading.Thread(target=shut_down, daemon=True, name="reelflow-shutdown")
        done.start()
        done.join(timeout=SHUTDOWN_S)
        if done.is_alive():
            log.warning("the pipeline did not shut down within %.0f s; leaving it", SHUTDOWN_S)


def _signal_handlers() -> dict:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict) -> None:
    if threading.current_thread() is threading.main_thread():  # only the main thread may set them
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


class PipelineLost(ReelflowError):
    """The pipeline died under the worker and cannot be made again from this process."""


class _Watch:
    """Asks the pipeline every WATCH_EVERY_S whether it is lost; keeps the first reason given."""

    def __init__(self, pipeline: Pipeline):
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(pipeline,), daemon=True, name="reelflow-watch")
        self._thread.start()

    def _watch(self, pipeline: Pipeline) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            try:
                reason = pipeline.lost()
            except Exception as e:  # asking failed: that is an answer too
                reason = f"the pipeline cannot be asked whether it is alive ({one_line(e, limit=200)})"
            if reason:
                self.reason = reason
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
