"""An outage of Redis as a process's loops see it: said once when it starts and once when it ends,
retries paced from a quarter second doubling to five."""

from __future__ import annotations

import logging

import redis

from services.store.outage import MAX_RETRY_S, Outage, StoreUnavailable


def test_an_outage_is_said_once_and_paced(caplog):
    outage = Outage("the test")
    error = redis.ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")
    assert isinstance(error, StoreUnavailable)
    with caplog.at_level(logging.WARNING, logger="reelflow.store"):
        delays = [outage.failed(error) for _ in range(8)]
        outage.recovered()
        outage.recovered()
    assert delays[:3] == [0.25, 0.5, 1.0] and delays[-1] == MAX_RETRY_S
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "unreachable" in messages[0] and "Connection refused" in messages[0]
    assert messages[1].startswith("Redis is back after")
    assert outage.summary()["redis_outages"] == 1 and not outage.down
    assert outage.failed(error) == 0.25  # a new outage starts its pacing again
