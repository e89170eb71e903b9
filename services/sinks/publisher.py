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
from services import metrics
from services.settings import Settings
from services.sinks import DeliveryError, SinkError, check_sink_urls, open_sink
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
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)  # no deliverer starts after this
        for thread in list(self._deliverers.values()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _scan(self) -> None:
        while not self.stop_event.wait(SCAN_EVERY_S):
            try:
                waiting = {sid: url for sid, url in self.outboxes.waiting(self.holder).items()
                           if not self._delivering(sid)}
                self.outage.recovered()
            except StoreUnavailable as e:  # Redis away: the worker's outage handling says so
                self.stop_event.wait(self.outage.failed(e))
                continue
            except Exception:  # a bug, or Redis refusing commands (out of memory): say so, go on
                log.exception("the sinks' scan failed; trying again")
                self.stop_event.wait(MAX_RETRY_S / 4)
                continue
            self._deliverers = {sid: t for sid, t in self._deliverers.items() if t.is_alive()}
            for sid, url in waiting.items():
                thread = threading.Thread(target=self._deliver, args=(sid, url), daemon=True,
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
        except Exception:  # Redis away or refusing: the scan tries again
            return
        try:
            _Deliverer(self, sid, url).run()
        except Exception:  # a bug: say so; the scan starts a new deliverer
            log.exception("sink %s: the deliverer failed", redact(url))
        finally:
            try:
                self.outboxes.release(sid, self.holder)
            except Exception:  # the lease runs out by itself
                pass


class _Deliverer:
    """One sink's outbox, sent in order while this worker holds the sink's lease."""

    def __init__(self, publisher: SinkPublisher, sid: str, url: str):
        self.p, self.sid, self.url = publisher, sid, url
        self.outboxes, self.settings, self.stop = publisher.outboxes, publisher.settings, publisher.stop_event
        self.failing_since: float | None = None
        self.tries = 0
        self.kind = url.split("://", 1)[0]  # the metrics' label until the sink is open
        self.lost = threading.Event()  # the lease: renewed by a thread of its own, even while a batch is sent
        self.done = threading.Event()

    def run(self) -> None:
        try:  # the URL checked again here: a job added with redis-cli XADD was never checked
            check_sink_urls([self.url], self.settings)
            sink, unusable = open_sink(self.url, self.settings), None
            self.kind = sink.name
        except SinkError as e:  # a URL that cannot be a sink (any more): its messages are dead-lettered
            sink, unusable = None, one_line(e)
        renewer = threading.Thread(target=self._renew, daemon=True, name=f"reelflow-sink-lease-{self.sid}")
        renewer.start()
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set() and not self.lost.is_set():
                try:
                    batch = self.outboxes.peek(self.sid, self.settings.sink_batch)
                except StoreUnavailable as e:
                    self.stop.wait(self.p.outage.failed(e))
                    continue
                except Exception:  # noqa: BLE001 -- Redis refusing; peek itself sets aside unreadable entries
                    log.exception("sink %s: cannot read its outbox", redact(self.url))
                    self.stop.wait(MAX_RETRY_S / 12)
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
            self.done.set()
            renewer.join(timeout=10)
            if sink is not None:
                sink.close()

    def _renew(self) -> None:
        renewed_at = time.monotonic()
        while not self.done.wait(RENEW_EVERY_S):
            try:
                mine = self.outboxes.renew(self.sid, self.p.holder, LEASE_S)
            except Exception:  # Redis away: mine until the lease may have run out
                mine = time.monotonic() - renewed_at < LEASE_S - 2 * RENEW_EVERY_S
            else:
                renewed_at = time.monotonic()
            if not mine:
                log.warning("sink %s: another worker delivers it now", redact(self.url))
                self.lost.set()
                return

    def _send(self, sink, batch: list[tuple[str, dict]]) -> None:
        try:
            sink.send([m for _, m in batch])
        except Exception as e:  # noqa: BLE001 -- whatever a sink raises is a failed delivery, retried
            metrics.inc("reelflow_sink_failures_total", kind=sink.name)
            if not isinstance(e, DeliveryError):
                log.exception("sink %s: the delivery raised", redact(self.url))
                e = DeliveryError(f"the delivery failed ({one_line(e, limit=200)})")
            self._failed(batch, e)
            return
        metrics.inc("reelflow_sink_delivered_total", len(batch), kind=sink.name)
        if self._try_store(self.outboxes.delivered, self.sid, [i for i, _ in batch]) and self.failing_since:
            log.warning("sink %s: delivering again after %.0f s", redact(self.url), time.time() - self.failing_since)
            self.failing_since, self.tries = None, 0

    def _failed(self, batch: list[tuple[str, dict]], error: DeliveryError) -> None:
        now = time.time()
        if not error.retryable:
            self._give_up(batch, error.reason)
            return
        if self.failing_since is None:
            self.failing_since = now
            log.warning("sink %s: %s; trying again with backoff for up to %.0f s", redact(self.url), error.reason,
                        self.settings.sink_retry_s)
        if now - self.failing_since > self.settings.sink_retry_s:
            self._give_up(batch, f"{error.reason} (tried for {now - self.failing_since:.0f} s)")
            return
        self._try_store(self.outboxes.failed_once, self.sid, error.reason, self.failing_since)
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(self.tries, 10)) * random.uniform(0.5, 1.5)
        self.tries += 1
        deadline = time.monotonic() + delay
        while not self.stop.is_set() and not self.lost.is_set() and time.monotonic() < deadline:
            self.stop.wait(min(1.0, deadline - time.monotonic()))

    def _give_up(self, batch: list[tuple[str, dict]], reason: str) -> None:
        if self._try_store(self.outboxes.dead_letter, self.sid, self.url, batch, reason):
            metrics.inc("reelflow_sink_dead_lettered_total", len(batch), kind=self.kind)
            log.warning("sink %s: %d message(s) to the sinks' dead-letter list: %s (`reelflow dlq list --sinks`)",
                        redact(self.url), len(batch), reason)
            self.failing_since, self.tries = None, 0

    def _try_store(self, call, *args) -> bool:
        """A write of the outcome; False when Redis is away or refuses it (out of memory, say): the
        batch is then sent again (at least once)."""
        try:
            call(*args)
            self.p.outage.recovered()
            return True
        except StoreUnavailable as e:
            self.stop.wait(self.p.outage.failed(e))
        except Exception as e:  # noqa: BLE001 -- Redis refusing the write: wait a little, as for an outage
            log.warning("sink %s: cannot record the outcome (%s)", redact(self.url), one_line(e, limit=200))
            self.stop.wait(MAX_RETRY_S / 12)
        return False
