"""Finding (or starting) the Redis a reelflow stack runs on.

Clients and workers agree through one rule: `REELFLOW_REDIS_URL` if set, else the embedded server
under the reelflow home (`--home`, `REELFLOW_HOME`, or ~/.local/share/reelflow).

    >>> queue = connect(settings_for(None))     # a running stack's queue, or a one-line error   # doctest: +SKIP
    >>> redis = StackRedis.open(settings)       # `up`, `process`: the embedded server started if need be  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis
from redis.connection import parse_url

from pipelines.errors import ReelflowError, one_line
from services.settings import Settings
from services.store.client import redact, redis_client  # noqa: F401 -- redact: also for the callers of this module
from services.store.embedded import EmbeddedRedis
from services.store.queue import JobQueue

log = logging.getLogger("reelflow.store")


def connect(settings: Settings) -> JobQueue:
    """The queue of a running stack, or a one-line error saying how to start one."""
    url = settings.redis_url or EmbeddedRedis(settings.home).url()
    if not url:
        raise ReelflowError(f"no reelflow stack is running for home {settings.home}; start one with "
                            "`reelflow up` (or set REELFLOW_REDIS_URL)")
    if "sentinel" in url.partition("://")[0].lower():
        raise ReelflowError(f"Redis Sentinel URLs are not supported ({redact(url)}); give the URL of the primary, or an "
                            "endpoint that follows it through failovers (a managed Redis's primary endpoint)")
    try:
        # A short timeout for this first ping: a TLS handshake with a plain port would wait it out.
        probe = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        probe.ping()
        mode = _server_mode(probe)
        probe.close()
    except ValueError as e:  # a malformed URL
        raise ReelflowError(f"bad Redis URL {redact(url)}: {one_line(e)}") from None
    except redis.AuthenticationError as e:  # before ConnectionError: it is one
        raise ReelflowError(_auth_error(url, e)) from None
    except redis.ResponseError as e:  # an older server's NOAUTH / WRONGPASS, or e.g. LOADING
        if str(e).startswith(("NOAUTH", "WRONGPASS")):
            raise ReelflowError(_auth_error(url, e)) from None
        raise ReelflowError(f"Redis at {redact(url)} answered PING with an error: {one_line(e)}") from None
    except (redis.RedisError, OSError) as e:  # refused, timed out, TLS failures, a missing CA file
        hint = ("give a private CA as ?ssl_ca_certs=/path/ca.crt" if "CERTIFICATE_VERIFY_FAILED" in str(e)
                else "is the stack up?")
        raise ReelflowError(f"cannot reach Redis at {redact(url)} ({one_line(e)}); {hint}") from None
    if mode != "standalone":
        raise ReelflowError(f"Redis at {redact(url)} runs in {mode} mode, which reelflow does not support: its queue "
                            "and results need one standalone Redis (with replicas and failover if you like); give "
                            "the URL of such a server or of its primary")
    return JobQueue(redis_client(url), settings)


def _server_mode(probe: redis.Redis) -> str:
    """'standalone', 'cluster' or 'sentinel' (a server that hides INFO counts as standalone)."""
    try:
        return str(probe.info("server").get("redis_mode") or "standalone")
    except redis.ResponseError:  # INFO renamed or disabled, as some managed services do
        return "standalone"


def _auth_error(url: str, error: Exception) -> str:
    if parse_url(url).get("password"):
        return f"Redis at {redact(url)} refused the password ({one_line(error)}); fix REELFLOW_REDIS_URL"
    return f"Redis at {redact(url)} needs a password: give it as redis://:PASSWORD@host:port/0 in REELFLOW_REDIS_URL"


@dataclass
class StackRedis:
    """The Redis a stack runs on, opened by `reelflow up` and `reelflow process`: REELFLOW_REDIS_URL's,
    or the embedded server under the home, started (or reused, when another `up` runs it)."""

    url: str
    queue: JobQueue
    embedded: EmbeddedRedis | None  # None: REELFLOW_REDIS_URL's server, which reelflow never stops
    _keeper: threading.Thread | None = None
    _closing: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, settings: Settings) -> StackRedis:
        embedded = None if settings.redis_url else EmbeddedRedis(settings.home)
        url = settings.redis_url or embedded.start()
        return cls(url, connect(settings), embedded)

    @property
    def started_here(self) -> bool:
        """True when this process started the embedded server (not reused a running one)."""
        return self.embedded is not None and self.embedded.owns_server

    def keep_alive(self, every_s: float = 2.0) -> None:
        """Restart the embedded server whenever it stops (a crash, the OOM killer, a SHUTDOWN): its
        append-only file brings the queue back; the worker waits out the gap (services.store.outage)."""
        if self.embedded is None or self._keeper is not None:
            return

        def keep() -> None:
            while not self._closing.wait(every_s):
                if self.embedded.url() is not None or self._closing.is_set():
                    continue
                log.warning("the embedded redis-server under %s stopped; starting it again from its append-only "
                            "file", self.embedded.dir)
                try:
                    self.embedded.start()
                except ReelflowError as e:  # say why, and try again next round
                    log.warning("%s", one_line(e))

        self._keeper = threading.Thread(target=keep, daemon=True, name="reelflow-redis-keeper")
        self._keeper.start()

    def close(self, keep: bool = False) -> None:
        """Stop the embedded server, unless `keep` (REELFLOW_REDIS_URL's server is never stopped)."""
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join(timeout=30)
        if self.embedded is not None and not keep:
            self.embedded.stop()
