"""The one way reelflow opens a Redis connection: a command retries by itself through a blip (a
restart, a failover) of about two seconds; the long-lived loops wait out longer outages
(`services.store.outage`).
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def redis_client(url: str, timeout_s: float = 10.0) -> redis.Redis:
    """A client of the Redis at `url` (redis://, rediss://, unix://): 5 s to connect, `timeout_s` per
    reply. reelflow never blocks on Redis for more than a second (XREADGROUP/XREAD BLOCK 1000), so
    a reply 10 s late means a partition or a stalled server: the caller's outage handling takes over."""
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=timeout_s,
                                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=4),
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])
