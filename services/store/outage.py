"""Redis going away and coming back, as the long-lived loops see it (the job consumer, lease
renewal, presence, the stream manager and runners): `StoreUnavailable` is what they catch, and the
process's `Outage` says so once in the log when it starts and once when it ends, and paces the retries.

    >>> outage = Outage.of_process()                            # doctest: +SKIP
    >>> try: claims = queue.claim(...)
    ... except StoreUnavailable as e: stop.wait(outage.failed(e)); continue
    ... outage.recovered()
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from pipelines.errors import one_line

log = logging.getLogger("reelflow.store")

# Redis refused, unreachable, too slow, still loading its append-only file, or a replica that
# became read-only in a failover: all pass; none is the caller's fault.
StoreUnavailable = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)

FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0


class Outage:
    """A process's view of Redis: down since when, how often it was down, when to try again."""

    _process: Outage | None = None

    @classmethod
    def of_process(cls) -> Outage:
        """The one this process's loops share, so that an outage is said once, not once per loop."""
        if cls._process is None:
            cls._process = cls("this process (the worker, its leases and streams)")
        return cls._process

    def __init__(self, who: str):
        self.who = who
        self.since: float | None = None  # monotonic time the current outage began
        self.count = 0  # outages seen
        self.last_s: float | None = None  # how long the last one lasted
        self._delay = FIRST_RETRY_S
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        """Record a failed call; the seconds to wait before the next try (doubling up to MAX_RETRY_S)."""
        with self._lock:
            if self.since is None:
                self.since, self._delay = time.monotonic(), FIRST_RETRY_S
                self.count += 1
                log.warning("Redis is unreachable (%s); %s waits for it, retrying up to every %.0f s",
                            one_line(error, limit=200), self.who, MAX_RETRY_S)
            delay, self._delay = self._delay, min(MAX_RETRY_S, self._delay * 2)
            return delay

    def recovered(self) -> None:
        """Record a call that worked: ends the outage, if there was one."""
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                self.last_s = time.monotonic() - self.since
                self.since = None
                log.warning("Redis is back after %.1f s", self.last_s)

    def summary(self) -> dict:
        """For the worker's presence (`reelflow status`): outages seen, and the last one's length."""
        return {"redis_outages": self.count, "last_redis_outage_s": None if self.last_s is None else round(self.last_s, 1)}
