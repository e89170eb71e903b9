"""The one way reelflow opens a Redis connection: a command retries by itself through a blip (a
restart, a failover) of about two seconds; the long-lived loops wait out longer outages
(`services.store.outage`).
"""

from __future__ import annotations

import re

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


def redact(url: str) -> str:
    """The URL without its password (user info, or a `password=`, `token=`, `key=`... argument), for messages.

    >>> redact("unix://:s3cret@/home/me/redis/redis.sock")
    'unix://***@/home/me/redis/redis.sock'
    >>> redact("rediss://default:s3cret@db:6380/0?ssl_ca_certs=/ca.crt&password=s3cret")
    'rediss://***@db:6380/0?ssl_ca_certs=/ca.crt&password=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, question, query = rest.partition("?")
    if "@" in head:  # everything before the last @ of the authority; a path with an @ is cut short too
        head = "***@" + head.rsplit("@", 1)[1]
    query = re.sub(r"(^|&)(password|token|key|secret|sig|signature|access_token)=[^&]*", r"\1\2=***", query,
                   flags=re.I)
    return f"{scheme}://{head}{question}{query}"
