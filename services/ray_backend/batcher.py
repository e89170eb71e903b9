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
from dataclasses import dataclass

from services import metrics, telemetry

log = logging.getLogger("reelflow.replica")
POLL_S = 0.002  # how often a lane gathering a batch looks for more clips
MAX_KEYS = 10_000  # live streams whose last service the batcher remembers


class Batcher:
    def __init__(self, forward: Callable[[list], list], max_batch_size: int, lanes: int = 1, wait_s: float = 0.0,
                 model: str = "", late_s: float | None = None):
        self.forward = forward  # a list of items -> a list of results, in order (runs on a lane's thread)
        self.model = model  # the metrics' label
        self.max_batch_size = max_batch_size
        self.lanes = lanes
        self.wait_s = wait_s
        # how far past its deadline a stream's freshest item may still run (None: however far); never
        # under one forward pass: an item taken while still within its deadline always runs, so a
        # model slower than the latency target still serves every stream
        self.late_s = late_s
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run
        self.late = 0  # items not run because they could not make their deadlines
        self._waiting: list[_Waiting] = []  # taken from the queue, not yet in a batch
        self._served_at: dict[str, float] = {}  # key -> when an item of it last went into a batch
        self._clip_s: float | None = None  # a forward pass's seconds per clip, smoothed
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

    async def submit(self, item, parent: tuple | None = None, deadline: float | None = None, key: str | None = None):
        """The item's result, once a lane has run it in a batch.

        `parent` (a trace context, attributes): the item's `reelflow.model_batch` span (its batch's
        forward pass) is recorded there. `deadline` (wall clock, `time.time()`) and `key` (a live
        stream's name): an item that cannot be done by its deadline is not run, and its result is
        None, unless it is its key's newest (then it runs after those on time); items with deadlines
        go first, the keys served longest ago first among them, so that an overloaded replica drops
        windows evenly over its streams. With `late_s`, even a key's newest item is not run once it
        would end over `late_s` past its deadline: latency stays bounded under overload."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.ensure_future(self._lane()) for _ in range(self.lanes)]
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiting(item, future, parent, deadline, key))
        return await future

    async def _lane(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            metrics.observe("reelflow_replica_batch_clips", len(batch), model=self.model)
            metrics.set_gauge("reelflow_replica_clips_waiting", len(self._waiting) + self._queue.qsize(),
                              model=self.model)
            started, started_ns = time.perf_counter(), time.time_ns()
            try:
                results = await loop.run_in_executor(self._executor, self.forward, [w.item for w in batch])
                seconds = time.perf_counter() - started
                metrics.observe("reelflow_replica_forward_seconds", seconds, model=self.model)
                per_clip = seconds / len(batch)
                self._clip_s = per_clip if self._clip_s is None else 0.8 * self._clip_s + 0.2 * per_clip
            except Exception as e:  # the batch's callers get the error; the lane goes on
                log.warning("a forward pass of %d clips failed: %s", len(batch), e)
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            self._record_spans(batch, started_ns, time.time_ns())
            for w, result in zip(batch, results):
                if not w.future.done():  # done: its caller gave up (a cancelled job)
                    w.future.set_result(result)

    def _record_spans(self, batch: list, started_ns: int, ended_ns: int) -> None:
        """A `reelflow.model_batch` span for each traced item: one batch serves several jobs, so each
        job's trace gets the pass its clip was in, with the batch's size."""
        for w in batch:
            if w.parent is not None:
                context, attributes = w.parent
                telemetry.record_span("reelflow.model_batch", context, started_ns, ended_ns,
                                      {**attributes, "reelflow.batch_size": len(batch), "reelflow.model": self.model})

    async def _next_batch(self) -> list:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            first = await self._queue.get()  # awaited first: the list may be replaced meanwhile
            self._waiting.append(first)
        gather_until = loop.time() + self.wait_s
        while True:
            while not self._queue.empty():
                self._waiting.append(self._queue.get_nowait())
            if len(self._waiting) >= self.max_batch_size or loop.time() >= gather_until:
                break
            await asyncio.sleep(POLL_S)
        return self._take(self.max_batch_size)

    def _take(self, size: int) -> list:
        """Up to `size` waiting items for a forward pass: first those with deadlines they can still
        make (the keys served longest ago first), then live items already too late, then the others
        in arrival order. A late item is dropped (its result None) when a newer one of its key waits,
        or when it would end over `late_s` (or one clip's pass, when longer) past its deadline: a
        stream's freshest window is run when it can be, so a model slower than the latency target
        still serves every stream, at the latency it can. With `late_s`, the batch is also cut where
        its pass (a clip's time, times its size) would end over `late_s` past a deadline in it: a big
        batch on a busy machine must not carry its windows past twice the target."""
        now = time.time()
        clip_s = self._clip_s or 0.0  # a clip's share of a pass
        give_up = None if self.late_s is None else max(self.late_s, clip_s)
        newest: dict[str, float] = {}  # key -> the latest deadline waiting
        for w in self._waiting:
            if w.deadline is not None and w.key is not None and not w.future.done():
                newest[w.key] = max(newest.get(w.key, w.deadline), w.deadline)
        live, late, other = [], [], []
        for w in self._waiting:
            if w.future.done():  # its caller gave up (a cancelled job)
                continue
            if w.deadline is None:
                other.append(w)
            elif now + clip_s <= w.deadline:
                live.append(w)
            elif w.key is not None and newest[w.key] <= w.deadline and (give_up is None or
                                                                        now + clip_s <= w.deadline + give_up):
                late.append(w)  # its stream's freshest: run it when nothing on time waits
            else:
                w.future.set_result(None)  # superseded by a newer window of its stream, or far too late
                self.late += 1
        live.sort(key=lambda w: (self._served_at.get(w.key, 0.0), w.deadline))
        late.sort(key=lambda w: (self._served_at.get(w.key, 0.0), w.deadline))
        batch: list[_Waiting] = []
        ends_by = float("inf")  # the pass must end by then: the deadlines in it, plus `late_s`
        for w in live + late + other:
            if len(batch) == size:
                break
            limit = w.deadline + give_up if w.deadline is not None and give_up is not None else float("inf")
            ends = now + clip_s * (len(batch) + 1)
            if batch and ends > ends_by:
                break  # one more clip would carry the batch's windows too far
            if batch and ends > limit:
                continue  # too late for this one in this pass: it waits for the next (or is dropped then)
            batch.append(w)
            ends_by = min(ends_by, limit)
        taken = {id(w) for w in batch}
        self._waiting[:] = [w for w in live + late + other if id(w) not in taken]  # in place: the one list
        for w in batch:
            if w.key is not None:
                self._served_at[w.key] = now
        if len(self._served_at) > MAX_KEYS:  # streams come and go: forget the longest unserved
            for key in sorted(self._served_at, key=self._served_at.get)[:len(self._served_at) - MAX_KEYS]:
                del self._served_at[key]
        return batch


@dataclass
class _Waiting:
    item: object
    future: asyncio.Future
    parent: tuple | None
    deadline: float | None
    key: str | None
