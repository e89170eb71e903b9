"""The indexer: a thread of every `up` that moves segments from the index outbox in Redis into the
vector index, in batches, and keeps the index in shape.

Each pass reads up to BATCH entries (waiting a second for the first, then LINGER_S for more),
appends their rows, applies their deletes, and only then acknowledges them (at least once: see
services.store.index_outbox). Lingering makes one write of the many segments that running jobs
store in a second or two: a write to the index costs ~5 ms of CPU and a file whatever its size.
A write per segment cost `up` 1.6 s of CPU per 90 bulk segments against 0.5 s without indexing
(~7% of the stack's CPU for them; a stack's first run, 3.5 s); lingering, 0.5-0.7 s. A segment is
searchable ~LINGER_S after it is stored.
When the index cannot be written (a full disk, a damaged directory) the entries stay in the
outbox, the error is logged once a minute, and the indexer tries again; results are stored all
the while, and past REELFLOW_INDEX_BACKLOG new segments skip the index, counted.

Every MAINTAIN_EVERY_S one `up` of the stack (the holder of a lease in Redis) trains or updates the
ANN index (vectors.VectorIndex.maintain), removes the vectors of jobs whose results expired, and
those of stream windows older than REELFLOW_RESULT_TTL_S.
"""

from __future__ import annotations

import logging
import threading
import time

from pipelines.errors import one_line
from services import metrics
from services.index.vectors import VectorIndex, quote
from services.settings import Settings
from services.store.index_outbox import IndexOutbox
from services.store.leases import Leases
from services.store.outage import Outage, StoreUnavailable
from services.store import keys

log = logging.getLogger("reelflow.index")

BATCH = 500
LINGER_S = 2.0
MAINTAIN_EVERY_S = 60.0
MAINTAIN_LEASE_S = 3600.0  # training the ANN index of a million segments takes minutes here
ERROR_LOG_EVERY_S = 60.0
RETRY_S = 5.0


class Indexer:
    def __init__(self, outbox: IndexOutbox, index: VectorIndex, settings: Settings, consumer: str,
                 leases: Leases | None = None, linger_s: float = LINGER_S):
        self.outbox, self.index, self.settings, self.consumer = outbox, index, settings, consumer
        self.linger_s = linger_s
        self.leases = leases
        self.stop_event = threading.Event()
        self.outage = Outage.of_process()
        self.last_error = ""
        self._cleared = False
        self._logged_error_at = 0.0
        self._maintained_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._maintainer: threading.Thread | None = None

    def start(self) -> Indexer:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="reelflow-indexer")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_event.set()
        for thread in (self._thread, self._maintainer):
            if thread is not None:
                thread.join(timeout_s)

    def _loop(self) -> None:
        try:  # Lance and pyarrow load now (~2 s of CPU), not in the first job
            self.index.table_names()
        except Exception as e:
            self._failed(e)
        while not self.stop_event.is_set():
            try:
                self.step()
                self.outage.recovered()
            except StoreUnavailable as e:
                self.stop_event.wait(self.outage.failed(e))
            except Exception as e:  # the index is unwritable: the entries wait in the outbox
                self._failed(e)
                self.stop_event.wait(RETRY_S)
            if time.monotonic() - self._maintained_at > MAINTAIN_EVERY_S and not self._maintaining():
                self._maintained_at = time.monotonic()
                self._maintainer = threading.Thread(target=self.maintain, daemon=True, name="reelflow-index-upkeep")
                self._maintainer.start()

    def step(self, block_ms: int = 1000) -> int:
        """One batch from the outbox into the index; returns the entries it took."""
        entries = self.outbox.read(self.consumer, BATCH, block_ms)
        if not entries:
            self._recovered()
            return 0
        if len(entries) < BATCH and self.linger_s > 0:  # more are on their way: one write for them all
            self.stop_event.wait(self.linger_s)
            entries += self.outbox.read(self.consumer, BATCH - len(entries), None)
        rows = [{**e["row"], "vector": e["vector"]} for _, e in entries if "row" in e]
        deleted = self.outbox.deleted({r["job"] for r in rows if r.get("job")})
        rows = [r for r in rows if r.get("job") not in deleted]  # a late repeat of a deleted job's segment
        if rows:
            self.index.add(rows)
        for _, e in entries:
            if "delete" in e:
                self.index.delete(f"job = {quote(e['delete'])}")
        self.outbox.ack([entry_id for entry_id, _ in entries])
        metrics.inc("reelflow_index_segments_total", len(rows))
        self._recovered()
        return len(entries)

    def _recovered(self) -> None:
        if self.last_error:
            log.info("the vector index is writable again")
        if self.last_error or not self._cleared:  # also an error an earlier run left in Redis
            self.outbox.set_error("")
            self.last_error, self._cleared = "", True

    def maintain(self) -> None:
        """The index's upkeep, by one `up` at a time."""
        lease = keys.INDEX_MAINTAINER
        try:
            if self.leases is not None and not self.leases.acquire(lease, self.consumer, MAINTAIN_LEASE_S):
                return
            for done in self.index.maintain():
                log.info("vector index: %s", done)
            self.sweep()
        except StoreUnavailable:
            pass  # next time
        except Exception as e:
            self._failed(e)
        finally:
            if self.leases is not None:
                try:
                    self.leases.release(lease, self.consumer)
                except StoreUnavailable:
                    pass

    def sweep(self) -> None:
        """Vectors of expired jobs, and of stream windows older than the results' TTL, go."""
        jobs = sorted({row["job"] for row in self.index.values(["job"], "kind = 'job'")})
        for i in range(0, len(jobs), 1000):
            if gone := self.outbox.jobs_gone(jobs[i:i + 1000]):
                self.index.delete(f"job IN ({', '.join(map(quote, gone))})")
                log.info("vector index: removed the segments of %d expired jobs", len(gone))
        self.index.delete(f"kind = 'stream' AND at < {time.time() - self.settings.result_ttl_s}")

    def _maintaining(self) -> bool:
        return self._maintainer is not None and self._maintainer.is_alive()

    def _failed(self, error: Exception) -> None:
        self.last_error = one_line(error, limit=800)
        try:
            self.outbox.set_error(self.last_error)
        except StoreUnavailable:
            pass
        if time.monotonic() - self._logged_error_at > ERROR_LOG_EVERY_S:
            self._logged_error_at = time.monotonic()
            log.warning("the vector index at %s cannot be written (%s); segments wait in Redis, and past "
                        "REELFLOW_INDEX_BACKLOG skip the index", self.index.uri, self.last_error)
