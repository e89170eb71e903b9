"""Leases in Redis: a key holding its holder's name, with an expiry the holder keeps renewing.
One worker reads a stream (its owner key), one delivers a sink's outbox (its lease key); when that
worker dies, the key expires and another takes over.

    >>> leases = Leases(client)                                          # doctest: +SKIP
    >>> leases.acquire("reelflow:stream:door:owner", "worker-1", lease_s=10)
    True
"""

from __future__ import annotations

import redis

# Renew, or delete, the key only while it still names the caller.
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._renew = client.register_script(RENEW_IF_HELD)
        self._release = client.register_script(RELEASE_IF_HELD)

    def acquire(self, key: str, holder: str, lease_s: float) -> bool:
        return bool(self.r.set(key, holder, nx=True, px=int(lease_s * 1000)))

    def renew(self, key: str, holder: str, lease_s: float) -> bool:
        """False when the lease ran out or another holder has it now."""
        return bool(self._renew(keys=[key], args=[holder, int(lease_s * 1000)]))

    def release(self, key: str, holder: str) -> None:
        self._release(keys=[key], args=[holder])

    def holder(self, key: str) -> str | None:
        raw = self.r.get(key)
        return raw.decode() if raw else None
