"""Starting (or joining) Ray, with what a busy machine needs: more than one try.

Ray gives a local node a fixed 30 s for its raylet to register with the GCS; on a loaded machine
(or right after a Ray that died is shut down) that is not always enough, and a failed `ray.init`
leaves the processes it started running. `init_ray` stops those and tries again until
REELFLOW_RAY_START_TIMEOUT_S has passed, then gives up with one line naming that setting.

    >>> init_ray(timeout_s=120)        # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
import time

import psutil
import ray

from pipelines.errors import ReelflowError, one_line

log = logging.getLogger("reelflow.ray")

NAMESPACE = "reelflow"
KEEP = ("redis-server",)  # children of this process that are not Ray's (the embedded Redis, restarted any time)
STOP_WAIT_S = 5.0


def init_ray(timeout_s: float) -> bool:
    """ray.init: RAY_ADDRESS's cluster, or a local node started here (tried again until `timeout_s`
    has passed). Whether this process started the node's processes (and so can start them again)."""
    address = os.environ.get("RAY_ADDRESS") or None
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        before = _children()
        try:
            ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
            break
        except Exception as e:  # no cluster at RAY_ADDRESS, or a local node that did not come up in time
            stopped = _stop_new_children(before)
            reason = one_line(e, limit=300)
            if address:
                raise ReelflowError(f"cannot join the Ray cluster at RAY_ADDRESS={address} ({reason}); "
                                    "is the address right, and the cluster up?") from None
            spent = time.monotonic() - started
            if spent >= timeout_s:
                raise ReelflowError(
                    f"Ray did not start ({tries} tr{'y' if tries == 1 else 'ies'} in {spent:.0f} s; {reason}); on a busy "
                    f"machine raise REELFLOW_RAY_START_TIMEOUT_S (now {timeout_s:g}), or run the command again") from None
            log.warning("Ray did not start (%s); stopped the %d processes it left, trying again", reason, stopped)
    node = ray._private.worker._global_node  # a node whose processes we started, or one we joined
    return bool(node is not None and node.all_processes)


def _children() -> dict[int, float]:
    """This process's descendants: pid -> start time (a pid alone can be reused)."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:  # gone meanwhile
            pass
    return found


def _stop_new_children(before: dict[int, float]) -> int:
    """Stop (TERM, then KILL) the descendants started since `before` — a failed ray.init's GCS,
    raylet and agents — so that the next try starts clean and nothing outlives the command."""
    try:
        ray.shutdown()  # whatever state the failed try left in this process
    except Exception:
        log.debug("ray.shutdown after a failed start", exc_info=True)
    new = []
    for child in psutil.Process().children(recursive=True):
        try:
            if before.get(child.pid) != child.create_time() and child.name() not in KEEP:
                new.append(child)
        except psutil.Error:
            pass
    for child in new:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(new, timeout=STOP_WAIT_S)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=STOP_WAIT_S)
    return len(new)
