"""Delivering the sinks' outboxes: the loop every `up` (and the Serve application's consumer) runs.

Every second it looks for sinks with messages waiting and starts a deliverer for each that no one
delivers yet. A deliverer holds the sink's lease in Redis (so one worker delivers a sink at a
time, and its messages go out in order), sends the oldest waiting messages in batches, and
deletes them from the outbox once the sink took them — a worker that dies between the two sends
that batch again (at least once). A batch that fails is tried again with exponential backoff and
jitter (1 s doubling to a minute) for REELFLOW_SINK_RETRY_S; then, or at once when the receiver
refuses it for good (a 4xx), it goes to the sinks' dead-letter list and the next one goes out.
A deliverer with nothing to send for a while lets the sink go.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from pipelines.errors import one_line
from services.settings import Settings
from services.sinks import DeliveryError, SinkError, open_sink
from services.store.outage import Outage, StoreUnavailable
from services.store.client import redact
from services.store.outbox import Outboxes

log = logging.getLogger("reelflow.sinks")

SCAN_EVERY_S = 1.0
LEASE_S = 30.0
RENEW_EVERY_S = 5.0
IDLE_S = 10.0  # a deliverer with nothing to send this long lets its sink go
FIRST_RETRY_S, MAX_RETRY_S = 1.0, 60.0


class SinkPublisher:
    def __init__(self, outboxes: Outboxes, settings: Settings, holder: str):
        self.outboxes, self.settings, self.holder = outboxes, settings, holder
        self.stop_event = threading.Event()
        self.outage = Outage.of_process()
        self._deliverers: dict[str, threading.Thread] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> SinkPublisher:
        self._thread = threading.Thread(target=self._scan, daemon=True, name="reelflow-sinks")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop delivering; a batch on its way finishes first (or is sent again by the next deliverer)."""
        self.stop_event.set()
        for thread in [self._thread, *self._deliverers.values()]:
            if thread is not None:
                thread.join(timeout=timeout_s)

    def _scan(self) -> None:
        while not self.stop_event.wait(SCAN_EVERY_S):
            try:
                sinks = self.outboxes.sinks()
                waiting = [sid for sid in sinks if not self._delivering(sid) and self.outboxes.backlog(sid)]
            except StoreUnavailable as e:  # Redis away: the worker's outage handling says so
                self.stop_event.wait(self.outage.failed(e))
                continue
            for sid in waiting:
                thread = threading.Thread(target=self._deliver, args=(sid, sinks[sid]["url"]), daemon=True,
                                          name=f"reelflow-sink-{sid}")
                self._deliverers[sid] = thread
                thread.start()

    def _delivering(self, sid: str) -> bool:
        thread = self._deliverers.get(sid)
        return thread is not None and thread.is_alive()

    def _deliver(self, sid: str, url: str) -> None:
        try:
            if not self.outboxes.acquire(sid, self.holder, LEASE_S):
                return  # another worker delivers it
        except StoreUnavailable:
            return  # the scan tries again
        try:
            _Deliverer(self, sid, url).run()
        except Exception:  # a bug: say so; the scan starts a new deliverer
            log.exception("sink %s: the deliverer failed", redact(url))
        finally:
            try:
                self.outboxes.release(sid, self.holder)
            except StoreUnavailable:
                pass  # the lease runs out by itself


class _Deliverer:
    """One sink's outbox, sent in order while this worker holds the sink's lease."""

    def __init__(self, publisher: SinkPublisher, sid: str, url: str):
        self.p, self.sid, self.url = publisher, sid, url
        self.outboxes, self.settings, self.stop = publisher.outboxes, publisher.settings, publisher.stop_event
        self.failing_since: float | None = None
        self.tries = 0
        self.renewed_at = time.monotonic()

    def run(self) -> None:
        try:
            sink = open_sink(self.url, self.settings)
        except SinkError as e:  # a URL that cannot be a sink (any more): its messages are dead-lettered
            sink, unusable = None, one_line(e)
        else:
            unusable = None
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set() and self._still_mine():
                try:
                    batch = self.outboxes.peek(self.sid, self.settings.sink_batch)
                except StoreUnavailable as e:
                    self.stop.wait(self.p.outage.failed(e))
                    continue
                if not batch:
                    if time.monotonic() - idle_since > IDLE_S:
                        return
                    self.stop.wait(0.2)
                    continue
                idle_since = time.monotonic()
                if unusable:
                    self._give_up(batch, unusable)
                    continue
                self._send(sink, batch)
        finally:
            if sink is not None:
                sink.close()

    def _send(self, sink, batch: list[tuple[str, dict]]) -> None:
        try:
            sink.send([m for _, m in batch])
        except DeliveryError as e:
            now = time.time()
            if self.failing_since is None:
                self.failing_since = now
                log.warning("sink %s: %s; trying again with backoff for up to %.0f s", redact(self.url), e.reason,
                            self.settings.sink_retry_s)
            if not e.retryable or now - self.failing_since > self.settings.sink_retry_s:
                self._give_up(batch, e.reason if not e.retryable else f"{e.reason} (tried for "
                                                                       f"{now - self.failing_since:.0f} s)")
                return
            self._try_store(self.outboxes.failed_once, self.sid, e.reason, self.failing_since)
            delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** self.tries) * random.uniform(0.5, 1.5)
            self.tries += 1
            self._wait(delay)
            return
        if self._try_store(self.outboxes.delivered, self.sid, [i for i, _ in batch]) and self.failing_since:
            log.warning("sink %s: delivering again after %.0f s", redact(self.url), time.time() - self.failing_since)
            self.failing_since, self.tries = None, 0

    def _give_up(self, batch: list[tuple[str, dict]], reason: str) -> None:
        if self._try_store(self.outboxes.dead_letter, self.sid, self.url, batch, reason):
            log.warning("sink %s: %d message(s) to the sinks' dead-letter list: %s (`reelflow dlq list --sinks`)",
                        redact(self.url), len(batch), reason)
            self.failing_since, self.tries = None, 0

    def _try_store(self, call, *args) -> bool:
        """A write of the outcome; False when Redis is away (the batch is then sent again: at least once)."""
        try:
            call(*args)
            self.p.outage.recovered()
            return True
        except StoreUnavailable as e:
            self.stop.wait(self.p.outage.failed(e))
            return False

    def _wait(self, seconds: float) -> None:
        """Back off, renewing the lease meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline and self._still_mine():
            self.stop.wait(min(RENEW_EVERY_S, deadline - time.monotonic()))

    def _still_mine(self) -> bool:
        if time.monotonic() - self.renewed_at < RENEW_EVERY_S:
            return True
        try:
            mine = self.outboxes.renew(self.sid, self.p.holder, LEASE_S)
        except StoreUnavailable:
            return time.monotonic() - self.renewed_at < LEASE_S / 2  # away too long: another worker may take it
        if mine:
            self.renewed_at = time.monotonic()
        else:
            log.warning("sink %s: another worker delivers it now", redact(self.url))
        return mine
