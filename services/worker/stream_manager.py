"""The worker's side of live streams: take ownership of registered streams, run them, give them up.

Every `EVERY_S` the manager renews the leases of the streams it runs, stops those that were
stopped (or taken over), restarts any whose runner died (a Ray actor killed, say), and takes
streams that nobody owns — up to `max_streams`. When the worker stops, it stops its streams and
releases them, so another worker takes them over at once; when it dies, their leases expire
within `LEASE_S` and another worker takes them over then.

Each time the manager takes a stream it holds the lease under a fresh value (`<worker>/<random>`),
which its runner publishes under: a runner of an earlier hold (one whose stop took too long, say)
can publish nothing once the stream is held again, even by the same worker.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from services.store.outage import Outage, StoreUnavailable
from services.store.streams import StreamRegistry
from services.worker.pipeline import Pipeline, StreamHandle

log = logging.getLogger("reelflow.streams")


class StreamManager:
    LEASE_S = 10.0
    EVERY_S = 2.0

    def __init__(self, registry: StreamRegistry, owner: str, pipeline: Pipeline, redis_url: str, max_streams: int = 32):
        self.registry, self.owner, self.pipeline = registry, owner, pipeline
        self.redis_url, self.max_streams = redis_url, max_streams
        self.running: dict[str, StreamHandle] = {}  # name -> the pipeline's handle on the stream's runner
        self.leases: dict[str, str] = {}  # name -> the value this worker holds its lease under
        self._stop = threading.Event()
        self._kept = 0.0  # when the leases were last renewed (time.monotonic())
        self.outage = Outage.of_process()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reelflow-streams")

    def start(self) -> StreamManager:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for name in list(self.running):
            self._drop(name)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sync()
                self.outage.recovered()
                late = time.monotonic() - last
                if late > self.LEASE_S / 2:  # a stall this long loses the leases: say why windows stopped
                    log.warning("stream manager: %.1f s between renewals of leases that last %.0f s: this worker "
                                "is overloaded or was stalled; its streams may move to another worker", late,
                                self.LEASE_S)
            except StoreUnavailable as e:  # Redis away: said once; the leases of other workers' streams
                self.outage.failed(e)      # run out meanwhile as ours do, so nobody takes ours unseen
            except Exception:  # Ray briefly away: next round
                log.warning("stream manager: sync failed", exc_info=True)
            last = time.monotonic()
            self._stop.wait(self.EVERY_S)

    def sync(self) -> None:
        specs = self.registry.specs()
        self._keep(specs)
        for name, spec in specs.items():
            if name in self.running or len(self.running) >= self.max_streams:
                continue
            lease = f"{self.owner}/{uuid.uuid4().hex[:6]}"
            if self.registry.acquire(name, lease, self.LEASE_S):
                log.info("stream %s: watching %s", name, spec.url)
                try:
                    self.running[name] = self.pipeline.start_stream(spec, self.redis_url, lease)
                    self.leases[name] = lease
                except Exception as e:
                    log.warning("stream %s: cannot start: %s", name, e)
                    self.registry.release(name, lease)
            if time.monotonic() - self._kept > self.EVERY_S:  # a slow start (a model deploying): the leases
                self._keep(specs)                              # held so far must not run out meanwhile

    def _keep(self, specs: dict) -> None:
        """Renew the leases of the streams running here; stop those stopped or taken over, restart
        those whose runner died."""
        self._kept = time.monotonic()
        for name, handle in list(self.running.items()):
            if name not in specs:
                log.info("stream %s: stopped; stopping it here", name)
                self._drop(name)
            elif not self.registry.renew(name, self.leases[name], self.LEASE_S):
                holder = self.registry.owner(name)
                log.info("stream %s: taken over (%s); stopping it here", name,
                         f"{holder.split('/')[0]} holds it now" if holder else
                         f"its lease ran out: not renewed for {self.LEASE_S:.0f} s")
                self._drop(name)
            elif not handle.alive():
                log.warning("stream %s: its runner died; restarting it", name)
                self.running[name] = self.pipeline.start_stream(specs[name], self.redis_url, self.leases[name])

    def _drop(self, name: str) -> None:
        handle = self.running.pop(name)
        lease = self.leases.pop(name)
        try:
            handle.stop()
        finally:
            self.registry.release(name, lease)
