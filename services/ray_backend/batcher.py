"""Continuous batching for a model replica: a batch forms when a forward lane is free, from the clips
waiting then (up to the largest batch), never earlier.

Serve's `@serve.batch` closes a batch a fixed time after its first clip even while the model is
busy, so under load its batches stay small and then queue. Here each of `lanes` workers takes the
next clip when its previous forward pass is done, adds whatever else waits, and runs the pass on a
thread of its own. Busy lanes let clips pile up into full batches; an idle lane serves a lone clip
after at most `wait_s` (spent gathering company for it). On a CPU several lanes of one torch thread
each beat one pass over all cores: a small model's convolutions do not spread well over threads
(x3d_xs on 2 cores: one pass with 2 threads 19-25 clips/s, two passes with 1 thread each 30-32).

    >>> batcher = Batcher(forward, max_batch_size=4, lanes=2, wait_s=0.02)     # doctest: +SKIP
    >>> probs, features = await batcher.submit(clip)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from services import metrics, telemetry

log = logging.getLogger("reelflow.replica")
POLL_S = 0.002  # how often a lane gathering a batch looks for more clips


class Batcher:
    def __init__(self, forward: Callable[[list], list], max_batch_size: int, lanes: int = 1, wait_s: float = 0.0,
                 model: str = ""):
        self.forward = forward  # a list of items -> a list of results, in order (runs on a lane's thread)
        self.model = model  # the metrics' label
        self.max_batch_size = max_batch_size
        self.lanes = lanes
        self.wait_s = wait_s
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run
        self.late = 0  # items not run because their deadline had passed
        self._executor = ThreadPoolExecutor(lanes, thread_name_prefix="reelflow-forward")
        self._queue: asyncio.Queue | None = None  # made on the event loop that first submits
        self._workers: list[asyncio.Task] = []  # held: the event loop keeps only weak references to tasks

    def warm(self, fn: Callable[[], None]) -> None:
        """Run `fn` once on each lane's thread, in the background: the first forward pass of each batch
        size on each thread costs 0.1-0.2 s more than the next (x3d_xs), which a fresh replica's first
        job would otherwise pay. Clips submitted meanwhile queue behind it."""
        together = threading.Barrier(self.lanes)  # holds each lane's thread until all have started

        def warm_lane() -> None:
            try:
                together.wait(timeout=60)
                fn()
            except Exception as e:  # only a slower first job
                log.warning("warming a forward lane failed: %s", e)

        for _ in range(self.lanes):
            self._executor.submit(warm_lane)

    async def submit(self, item, parent: tuple | None = None, deadline: float | None = None):
        """The item's result, once a lane has run it in a batch. `parent` (a trace context, attributes):
        the item's `reelflow.model_batch` span (its batch's forward pass) is recorded there. An item
        still waiting at `deadline` (wall clock, `time.time()`) is not run: its result is None."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.ensure_future(self._lane()) for _ in range(self.lanes)]
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future, parent, deadline))
        return await future

    async def _lane(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            metrics.observe("reelflow_replica_batch_clips", len(batch), model=self.model)
            metrics.set_gauge("reelflow_replica_clips_waiting", self._queue.qsize(), model=self.model)
            started, started_ns = time.perf_counter(), time.time_ns()
            try:
                results = await loop.run_in_executor(self._executor, self.forward, [item for item, _, _, _ in batch])
                metrics.observe("reelflow_replica_forward_seconds", time.perf_counter() - started, model=self.model)
            except Exception as e:  # the batch's callers get the error; the lane goes on
                log.warning("a forward pass of %d clips failed: %s", len(batch), e)
                for _, future, _, _ in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self._record_spans(batch, started_ns, time.time_ns())
            for (_, future, _, _), result in zip(batch, results):
                if not future.done():  # done: its caller gave up (a cancelled job)
                    future.set_result(result)

    def _record_spans(self, batch: list, started_ns: int, ended_ns: int) -> None:
        """A `reelflow.model_batch` span for each traced item: one batch serves several jobs, so each
        job's trace gets the pass its clip was in, with the batch's size."""
        for _, _, parent, _ in batch:
            if parent is not None:
                context, attributes = parent
                telemetry.record_span("reelflow.model_batch", context, started_ns, ended_ns,
                                      {**attributes, "reelflow.batch_size": len(batch), "reelflow.model": self.model})

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
            elif asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(POLL_S)
            else:
                break
        now = time.time()
        for _, future, _, deadline in batch:  # too late to be of use (a live window): not run
            if deadline is not None and now > deadline and not future.done():
                future.set_result(None)
                self.late += 1
        return [entry for entry in batch if not entry[1].done()]
