"""The stream manager's leases on a real Redis: it says why it gave a stream up (stopped, taken by
another worker, or its own lease ran out), takes a lapsed stream back under a new hold, and warns
when its rounds come too late to keep its leases.

The pipeline here starts no runner (a handle that is alive until stopped): the manager's lease
keeping is what is tested, the runners are tested in test_streams.
"""

from __future__ import annotations

import logging
import time

import pytest
import redis

from services.store import keys
from services.store.streams import StreamRegistry, StreamSpec
from services.worker.stream_manager import StreamManager


class Handle:
    def __init__(self):
        self.stopped = False

    def alive(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        self.stopped = True


class Pipeline:
    """Starts handles, taking `start_s` each (a model loading, a slow camera)."""

    def __init__(self, start_s: float = 0.0):
        self.start_s, self.handles = start_s, []

    def start_stream(self, spec, redis_url, owner):
        time.sleep(self.start_s)
        self.handles.append(Handle())
        return self.handles[-1]


@pytest.fixture
def registry(redis_server_url):
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    registry = StreamRegistry(client)
    assert registry.register(StreamSpec(name="cam", url="/videos/cam.mp4"))
    return registry


def test_a_stream_taken_by_another_worker_is_given_up_naming_it(registry, redis_server_url, caplog):
    pipeline = Pipeline()
    manager = StreamManager(registry, "worker-a", pipeline, redis_server_url)
    manager.sync()
    assert registry.owner("cam").startswith("worker-a/") and manager.running
    registry.r.set(keys.stream_owner("cam"), "worker-b/123456", px=10_000)  # B took it while A looked away
    with caplog.at_level(logging.INFO, "reelflow.streams"):
        manager.sync()
    assert "stream cam: taken over (worker-b holds it now)" in caplog.text
    assert pipeline.handles[0].stopped and not manager.running and registry.owner("cam") == "worker-b/123456"


def test_a_lapsed_lease_is_said_and_the_stream_held_again_under_a_new_hold(registry, redis_server_url, caplog):
    pipeline = Pipeline()
    manager = StreamManager(registry, "worker-a", pipeline, redis_server_url)
    manager.sync()
    first = registry.owner("cam")
    registry.r.pexpire(keys.stream_owner("cam"), 1)  # the lease runs out, as when renewals come too late
    time.sleep(0.05)
    with caplog.at_level(logging.INFO, "reelflow.streams"):
        manager.sync()
    assert "stream cam: taken over (its lease ran out: not renewed for 10 s)" in caplog.text
    held = registry.owner("cam")
    assert held.startswith("worker-a/") and held != first  # the old hold's runner can publish nothing
    assert pipeline.handles[0].stopped and not pipeline.handles[1].stopped


def test_a_stopped_stream_is_said_stopped(registry, redis_server_url, caplog):
    pipeline = Pipeline()
    manager = StreamManager(registry, "worker-a", pipeline, redis_server_url)
    manager.sync()
    assert registry.stop("cam")
    with caplog.at_level(logging.INFO, "reelflow.streams"):
        manager.sync()
    assert "stream cam: stopped; stopping it here" in caplog.text
    assert pipeline.handles[0].stopped and registry.owner("cam") is None


def test_rounds_too_late_to_keep_the_leases_are_warned_of(registry, redis_server_url, caplog):
    registry.register(StreamSpec(name="door", url="/videos/door.mp4"))
    pipeline = Pipeline(start_s=0.4)  # two streams to start: a round of 0.8 s, past half the lease
    manager = StreamManager(registry, "worker-a", pipeline, redis_server_url)
    manager.LEASE_S, manager.EVERY_S = 1.0, 0.05
    with caplog.at_level(logging.WARNING, "reelflow.streams"):
        manager.start()
        deadline = time.monotonic() + 10
        while "between renewals" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        manager.close()
    assert "s between renewals of leases that last 1 s: this worker is overloaded or was stalled" in caplog.text


def test_rounds_in_time_are_not_warned_of(registry, redis_server_url, caplog):
    manager = StreamManager(registry, "worker-a", Pipeline(), redis_server_url)
    manager.LEASE_S, manager.EVERY_S = 1.0, 0.05
    with caplog.at_level(logging.WARNING, "reelflow.streams"):
        manager.start()
        time.sleep(1.0)  # some 20 rounds
        held = registry.owner("cam")
        manager.close()
    assert held.startswith("worker-a/") and "between renewals" not in caplog.text


def test_slow_starts_in_one_round_do_not_let_the_first_leases_run_out(registry, redis_server_url, caplog):
    for name in ("door", "yard"):
        registry.register(StreamSpec(name=name, url=f"/videos/{name}.mp4"))
    pipeline = Pipeline(start_s=0.4)  # three starts: 1.2 s, past a lease of 1 s
    manager = StreamManager(registry, "worker-a", pipeline, redis_server_url)
    manager.LEASE_S, manager.EVERY_S = 1.0, 0.05
    with caplog.at_level(logging.INFO, "reelflow.streams"):
        manager.sync()
        owners = {name: registry.owner(name) for name in ("cam", "door", "yard")}
        manager.sync()
    assert all(owner and owner.startswith("worker-a/") for owner in owners.values()), owners
    assert "taken over" not in caplog.text and not any(h.stopped for h in pipeline.handles)
    assert {name: registry.owner(name) for name in owners} == owners  # held all along, under the same holds
