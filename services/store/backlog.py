"""The job backlog as the autoscaler sees it: read from Redis at most once a second, never raising.

    >>> job_backlog()        # jobs waiting, claimed or retrying; None when Redis cannot be read   # doctest: +SKIP
    3
"""

from __future__ import annotations

import logging
import time

from services.settings import Settings
from services.store.connection import connect

log = logging.getLogger("reelflow.autoscale")

READ_EVERY_S = 1.0  # Serve's controller asks several times a second
_state: dict = {"at": 0.0, "backlog": None, "queue": None, "settings": None}


def _settings():
    if _state["settings"] is None:
        _state["settings"] = Settings.from_env()
    return _state["settings"]


def jobs_per_replica() -> int:
    return _settings().jobs_per_replica


def job_backlog() -> int | None:
    """Jobs waiting, claimed or retrying in the stack's queue; None if Redis cannot be read."""
    now = time.monotonic()
    if now - _state["at"] < READ_EVERY_S:
        return _state["backlog"]
    _state["at"] = now
    try:
        if _state["queue"] is None:
            _state["queue"] = connect(_settings())
        _state["backlog"] = sum(_state["queue"].depth().values())
    except Exception as e:  # Redis away or not configured: Serve's request-based policy alone
        log.warning("autoscaling: cannot read the job backlog (%s)", e)
        _state["queue"] = _state["backlog"] = None
    return _state["backlog"]
