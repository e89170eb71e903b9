"""Live streams on a real stack: watch, tail, list, stop; ownership moving when a worker dies;
a Ray stream host killed; the whole stack restarted."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time

import pytest
import redis

from pipelines.synthetic import make_video
from services.store.embedded import EmbeddedRedis
from services.store.streams import StreamRegistry, StreamSpec
from support.stack_process import UpProcess, run, stack_env


@pytest.fixture(scope="module")
def camera(video_dir):
    """A 3 s video, played live and looped by the worker: a camera that never ends."""
    path = video_dir / "camera.mp4"
    make_video(path, seconds=3.0, fps=25, size=(320, 240))
    return path


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def tail(env, name: str, count: int, timeout: float = 90) -> list[dict]:
    out = run(env, "tail", name, "--json", "--count", count, timeout=timeout)
    return [json.loads(line) for line in out.stdout.splitlines()]


def listing(env) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(run(env, "streams", "list", "--json").stdout)}


def test_registry_ownership_is_exclusive_and_expires(tmp_path):
    server = EmbeddedRedis(tmp_path)
    registry = StreamRegistry(redis.Redis.from_url(server.start()))
    try:
        assert registry.register(StreamSpec(name="door", url="rtsp://cam/1"))
        assert not registry.register(StreamSpec(name="door", url="rtsp://cam/2"))  # names are unique
        assert registry.acquire("door", "w1", lease_s=0.3) and not registry.acquire("door", "w2", lease_s=0.3)
        assert registry.renew("door", "w1", lease_s=0.3) and not registry.renew("door", "w2", lease_s=0.3)
        time.sleep(0.4)  # w1 died: its lease runs out
        assert registry.owner("door") is None and registry.acquire("door", "w2", lease_s=5)
        registry.release("door", "w1")  # not its owner: nothing happens
        assert registry.owner("door") == "w2"
        assert registry.stop("door") and registry.specs() == {}
    finally:
        server.stop()


def test_only_the_owner_publishes_and_a_new_owner_numbers_on(tmp_path):
    """A worker cut off longer than its lease comes back to a stream another worker took: its
    windows and status writes are refused, and the new owner's windows go on from the last index."""
    server = EmbeddedRedis(tmp_path)
    registry = StreamRegistry(redis.Redis.from_url(server.start()))
    try:
        registry.register(StreamSpec(name="door", url="rtsp://cam/1"))
        assert registry.next_index("door") == 0
        registry.acquire("door", "old", lease_s=0.3)
        enter = {"event": "enter", "label": "walking", "index": 0}
        assert registry.publish("door", "old", {"index": 0}, [enter])
        assert registry.publish("door", "old", {"index": 1}, [])
        assert registry.set_status("door", "old", {"owner": "old", "segments": 2})
        time.sleep(0.4)  # partitioned: "old" cannot renew, its lease runs out, "new" takes the stream
        assert registry.acquire("door", "new", lease_s=5) and registry.next_index("door") == 2
        assert not registry.publish("door", "old", {"index": 2}, [enter])  # healed: refused
        assert not registry.set_status("door", "old", {"owner": "old", "segments": 3})
        assert registry.publish("door", "new", {"index": 2}, [])
        assert [r["index"] for _, r in registry.recent("door", 10)] == [0, 1, 2]
        assert registry.events("door") == [enter] and registry.status("door") == {"owner": "old", "segments": 2}
    finally:
        server.stop()


def test_watch_tail_list_stop_in_process(home, camera):
    env = stack_env(home)
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        # thresholds low enough for random weights' flat scores: the first result makes a label current
        run(env, "watch", camera, "--name", "cam1", "--weights", "none", "--enter", "0.001", "--exit", "0.0005")
        results = tail(env, "cam1", 3)
        assert [r["index"] for r in results] == [results[0]["index"] + i for i in range(3)]
        for r in results:
            assert r["end_s"] - r["start_s"] == pytest.approx(1.6) and len(r["labels"]) == 5
            assert 0 <= r["published_at"] - r["captured_at"] < 2.0
            assert set(r["smoothed"]) == {"labels", "scores"} and r["weights"].startswith("none")
        row = listing(env)["cam1"]
        assert row["state"] == "live" and row["dropped"] == 0 and row["owner"]
        events = [json.loads(line) for line in run(env, "tail", "cam1", "--events", "--json").stdout.splitlines()]
        assert events and events[0]["event"] == "enter" and events[0]["stream"] == "cam1"
        assert {e["event"] for e in events} <= {"enter", "exit"} and isinstance(events[0]["label"], str)
        again = run(env, "watch", camera, "--name", "cam1", check=False)
        assert again.returncode == 1 and "already watched" in again.stderr
        refused = run(env, "watch", "file:///etc/passwd", "--name", "bad", check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "not allowed" in refused.stderr
        run(env, "streams", "stop", "cam1")
        registry = StreamRegistry(redis.Redis.from_url((home / "redis" / "url").read_text().strip()))
        time.sleep(3)  # the owner notices within a manager round
        kept = len(registry.results("cam1", count=10_000))
        time.sleep(2.5)
        assert kept >= 3 and len(registry.results("cam1", count=10_000)) == kept  # kept, and no new ones
        assert "cam1" not in listing(env)
    finally:
        up.stop()


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_a_dead_workers_stream_is_taken_over(home, camera):
    env = stack_env(home)
    first = UpProcess(home, env, "--no-ray", "--weights", "none", "--keep-redis")
    second = None
    try:
        run(env, "watch", camera, "--name", "cam1", "--weights", "none")
        tail(env, "cam1", 1)
        owner = listing(env)["cam1"]["owner"]
        second = UpProcess(home, env, "--no-ray", "--weights", "none", "--keep-redis")
        first.kill()
        killed_at = time.time()
        deadline = time.monotonic() + 40
        while listing(env)["cam1"]["owner"] in (owner, None):
            assert time.monotonic() < deadline, "nobody took the stream over"
            time.sleep(0.5)
        [result] = tail(env, "cam1", 1)
        assert result["captured_at"] > killed_at and time.time() - killed_at < 30
    finally:
        if second is not None:
            second.stop()
        first.stop()
        EmbeddedRedis(home).stop()


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_ray_streams_survive_a_killed_host_and_a_restarted_stack(home, camera):
    env = stack_env(home)
    up = UpProcess(home, env, "--weights", "none")
    try:
        for name in ("cam1", "cam2"):
            run(env, "watch", camera, "--name", name, "--weights", "none")
        for name in ("cam1", "cam2"):
            tail(env, name, 2)
        host = [int(p) for p in subprocess.run(["pgrep", "-f", "ray::StreamHost"], capture_output=True,
                                               text=True).stdout.split()]
        assert host, "expected a StreamHost actor"
        os.kill(host[0], signal.SIGKILL)
        killed_at = time.time()
        for name in ("cam1", "cam2"):
            [result] = tail(env, name, 1, timeout=60)
            assert result["captured_at"] > killed_at and time.time() - killed_at < 40, name
        up.kill()
        os.kill(int((home / "redis" / "redis.pid").read_text()), signal.SIGKILL)
        up = UpProcess(home, env, "--weights", "none")
        restarted_at = time.time()
        for name in ("cam1", "cam2"):  # re-opened by the new stack
            [result] = tail(env, name, 1, timeout=90)
            assert result["captured_at"] > restarted_at, name
    finally:
        up.stop()


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_rtsp_cameras_live_latency_outage_and_stop(home, camera):
    """The issue's check, with two cameras: real RTSP servers, a camera gone for 8 s and back."""
    from support.rtsp_camera import Camera

    cameras = {name: Camera(camera).start() for name in ("door", "yard")}
    # the outage must drop nothing; a window late for the 1 s target on a busy 2-core machine would
    # be dropped by the overload policy (tested on its own), so the target here is looser
    env = stack_env(home, REELFLOW_STREAM_LATENCY_S="3")
    up = UpProcess(home, env, "--weights", "none")
    try:
        for name, cam in cameras.items():
            run(env, "watch", cam.url, "--name", name, "--weights", "none")
        for name in cameras:
            results = tail(env, name, 5)
            assert [r["index"] for r in results] == list(range(results[0]["index"], results[0]["index"] + 5))
            latencies = sorted(r["published_at"] - r["captured_at"] for r in results)
            assert latencies[-1] <= 1.0, (name, latencies)  # p95 of 5 is the largest
        cameras["door"].stop()
        down_at = time.time()
        time.sleep(8)
        cameras["door"].start()
        back_at = time.time()
        # the reader retries with jittered exponential backoff (0.5 s doubling, x0.5-1.5): 8 s down, it
        # may be in a wait of up to 12 s when the camera comes back, and failed opens take time too (a
        # run here reconnected 20 s after: 6 tries), then a window fills (1.6 s)
        deadline = time.monotonic() + 40
        resumed = False
        while not resumed and time.monotonic() < deadline:
            [result] = tail(env, "door", 1, timeout=45)
            resumed = result["captured_at"] > back_at
        assert resumed, "door's results did not resume within 40 s"
        rows = listing(env)
        counts = {name: {k: rows[name][k] for k in ("reconnects", "dropped", "drop_reasons")} for name in cameras}
        assert rows["door"]["reconnects"] >= 1 and rows["door"]["dropped"] == 0 and rows["yard"]["dropped"] == 0, counts
        [yard] = tail(env, "yard", 1)
        assert yard["captured_at"] > down_at  # the other camera went on
        run(env, "streams", "stop", "yard")
        assert "yard" not in listing(env)
    finally:
        up.stop()
        for cam in cameras.values():
            cam.stop()


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_a_model_that_cannot_keep_up_drops_the_oldest_clips_and_latency_stays_flat(home, camera):
    """mvit_base_16x4 on this CPU does about one clip a second; two streams asking for four clips a
    second (stride 0.5 s) must drop clips, counted, rather than queue them. (On Ray: the stream host
    reads in a process of its own, so a slow model cannot starve the readers.)"""
    env = stack_env(home)
    up = UpProcess(home, env, "--weights", "none", "--model", "mvit_base_16x4")
    try:
        for name in ("a", "b"):
            run(env, "watch", camera, "--name", name, "--model", "mvit_base_16x4", "--weights", "none",
                "--stride", "0.5")
        results = tail(env, "a", 12, timeout=180)
        latencies = [r["published_at"] - r["captured_at"] for r in results]
        # The replica alternates between the two streams, so a's results come one per two forward
        # passes: the bound is in forward passes of this machine (4 in flight or waiting, one running,
        # and one for the scheduling noise of a 2-core machine: 6 passes missed by 2% once in CI),
        # not in seconds, which differ from machine to machine by 2x. A queue would grow without bound.
        published = sorted(r["published_at"] for r in results[6:])
        forward_s = statistics.median(b - a for a, b in zip(published, published[1:])) / 2
        assert max(latencies[6:]) < 7 * forward_s + 1.0, (forward_s, latencies)
        assert max(latencies[6:]) < 2 * max(latencies[:6]) + 1.0, latencies  # and not rising
        rows = listing(env)
        assert rows["a"]["dropped"] + rows["b"]["dropped"] > 0, rows
        indices = [r["index"] for r in results]
        assert indices == sorted(set(indices)) and indices[-1] - indices[0] > len(indices) - 1  # gaps: drops
    finally:
        up.stop()
