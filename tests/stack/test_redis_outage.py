"""Redis goes away under a running stack and comes back (issue 17, part 1): `up` waits for it,
says so once, and carries on; the job in hand ends with every segment stored exactly once; a
client that finds Redis gone says so in one line. The embedded server, `up`'s own, is restarted
by `up` itself when it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import redis

from services.store.embedded import EmbeddedRedis
from services.store.streams import StreamRegistry, StreamSpec
from support.stack_process import REELFLOW, UpProcess, run, stack_env


@pytest.fixture
def long_video(video_dir):
    from pipelines.synthetic import make_video

    path = video_dir / "outage_30s.mp4"
    if not path.exists():
        make_video(path, seconds=30.0, fps=15, size=(160, 120))
    return path


@pytest.fixture
def longer_video(video_dir):
    """Long enough (480 segments at stride 0.25) that a job on the fast runtime is still running
    seconds after its first segments: OpenVINO does the 30 s one in about 5 s here."""
    from pipelines.synthetic import make_video

    path = video_dir / "outage_120s.mp4"
    if not path.exists():
        make_video(path, seconds=120.0, fps=15, size=(160, 120))
    return path


def _status(env, job_id: str, wait_s: float = 30.0) -> dict:
    """The job's status, asked again while Redis is down (for at most `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while (answer := run(env, "status", job_id, "--json", check=False)).returncode != 0:
        assert time.monotonic() < deadline, answer.stderr
        time.sleep(0.5)
    return json.loads(answer.stdout)


def _submit_and_wait_for_progress(env, video, up) -> str:
    job_id = json.loads(run(env, "submit", video, "--weights", "none", "--stride", "0.25", "--no-embeddings",
                            "--json").stdout)["job_id"]
    deadline = time.monotonic() + 120
    while _status(env, job_id)["segments_done"] < 3:
        assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
        time.sleep(0.05)
    return job_id


def _ends_done_with_every_segment_once(env, job_id: str, up) -> None:
    deadline = time.monotonic() + 240
    while (state := _status(env, job_id))["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
        time.sleep(0.2)
    assert state["state"] == "done", state
    segments = [json.loads(line) for line in run(env, "results", job_id).stdout.splitlines()]
    assert [s["index"] for s in segments] == list(range(state["segments_total"]))  # each once, none missing
    assert up.proc.poll() is None
    log = up.log_path.read_text()
    said = log.count("Redis is unreachable")  # none when the commands' own retries bridged the gap
    deadline = time.monotonic() + 30  # the loops retry up to every 5 s: the first back may say so a little later
    while said == 1 and "Redis is back" not in log and time.monotonic() < deadline:
        time.sleep(0.5)
        log = up.log_path.read_text()
    assert said <= 1 and ("Redis is back" in log) == (said == 1), log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.slow  # about 15-25 s: `make test` stays under 15 minutes
def test_an_external_redis_restarted_mid_job_loses_nothing_and_stores_nothing_twice(tmp_path, long_video):
    server = EmbeddedRedis(tmp_path / "redis-server")  # a Redis of one's own, as REELFLOW_REDIS_URL names it
    url = server.start()
    env = stack_env(tmp_path / "home", REELFLOW_REDIS_URL=url)
    up = UpProcess(tmp_path / "home", env, "--no-ray", "--weights", "none")
    try:
        job_id = _submit_and_wait_for_progress(env, long_video, up)
        server.stop()  # SHUTDOWN: the append-only file is flushed, as a managed Redis's restart does
        time.sleep(4)  # longer than a command's own retries: the worker must wait it out
        assert up.proc.poll() is None, f"up died with Redis:\n{up.log_path.read_text()[-3000:]}"
        down = run(env, "status", check=False)
        assert down.returncode == 1 and down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
        assert "***" in down.stderr and url.split("@")[0].split(":")[-1] not in down.stderr  # password redacted
        server.start()
        _ends_done_with_every_segment_once(env, job_id, up)
        assert up.log_path.read_text().count("Redis is unreachable") == 1  # 4 s: longer than a command retries
    finally:
        up.stop()
        server.stop()


@pytest.mark.slow  # about 30 s, and `make test` is near its 15 minutes: `make test-slow`
def test_up_restarts_its_embedded_redis_when_it_is_killed(tmp_path, long_video):
    home = tmp_path / "home"
    env = stack_env(home)
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        job_id = _submit_and_wait_for_progress(env, long_video, up)
        os.kill(int((home / "redis" / "redis.pid").read_text()), signal.SIGKILL)  # a crash, the OOM killer
        _ends_done_with_every_segment_once(env, job_id, up)
        assert "starting it again from its append-only file" in up.log_path.read_text()
    finally:
        up.stop()
    assert run(env, "status", check=False).returncode == 1  # and `up` took it down when it stopped


@pytest.mark.slow  # a Ray stack and a minute without Redis: `make test-slow`
def test_a_ray_stack_with_a_camera_waits_out_a_minute_without_redis(tmp_path, long_video, video_dir):
    """Under Ray, with a camera playing: Redis away for 60 s. The job ends done with every segment
    once, the camera publishes again with no index twice (the windows of the outage are lost and
    counted), and the stack said so once."""
    from pipelines.synthetic import make_video
    from services.store.streams import StreamRegistry
    import redis

    camera = video_dir / "outage_camera.mp4"
    make_video(camera, seconds=3.0, fps=25, size=(160, 120))
    server = EmbeddedRedis(tmp_path / "redis-server")
    url = server.start()
    env = stack_env(tmp_path / "home", REELFLOW_REDIS_URL=url)
    up = UpProcess(tmp_path / "home", env, "--weights", "none")
    try:
        registry = StreamRegistry(redis.Redis.from_url(url))
        run(env, "watch", camera, "--name", "cam", "--weights", "none")
        job_id = _submit_and_wait_for_progress(env, long_video, up)
        deadline = time.monotonic() + 60
        while len(registry.recent("cam", 5)) < 2:
            assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
            time.sleep(0.2)
        server.stop()
        time.sleep(60)
        assert up.proc.poll() is None, f"up died without Redis:\n{up.log_path.read_text()[-3000:]}"
        server.start()
        registry = StreamRegistry(redis.Redis.from_url(url))
        before = {i for i, _ in registry.recent("cam", 10_000)}
        _ends_done_with_every_segment_once(env, job_id, up)
        deadline = time.monotonic() + 120
        while not {i for i, _ in registry.recent("cam", 10_000)} - before:
            assert time.monotonic() < deadline, f"the camera published nothing after Redis came back:\n" \
                                                f"{up.log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        indices = [r["index"] for _, r in registry.recent("cam", 10_000)]
        assert indices == sorted(set(indices)), indices
        assert up.log_path.read_text().count("Redis is unreachable") == 1
    finally:
        up.stop()
        server.stop()


@pytest.mark.slow  # about 40 s: `make test-slow`
def test_a_redis_restart_that_lost_its_last_writes_loses_no_job(tmp_path, longer_video):
    """Redis crashes and comes back from an append-only file two seconds old (an fsync that did not
    happen, a failover to a replica that lagged): the segments stored since are gone. The worker
    stores on, finds at the end that not every segment is stored, and the job is delivered again to
    fill the gaps: it ends done with every segment once. (Had the claim token been lost too, the
    worker's writes would be refused and the job taken again after its lease: test_queue.py.)"""
    import shutil

    server = EmbeddedRedis(tmp_path / "redis-server")
    url = server.start()
    env = stack_env(tmp_path / "home", REELFLOW_REDIS_URL=url, REELFLOW_LEASE_S="4")
    up = UpProcess(tmp_path / "home", env, "--no-ray", "--weights", "none")
    try:
        job_id = _submit_and_wait_for_progress(env, longer_video, up)
        aof = server.dir / "appendonly.aof"
        time.sleep(1.5)  # the append-only file is written every second
        shutil.copy(aof, tmp_path / "older.aof")
        done_then = _status(env, job_id)["segments_done"]
        deadline = time.monotonic() + 60
        while _status(env, job_id)["segments_done"] < done_then + 3:
            assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
            time.sleep(0.05)
        os.kill(int((server.dir / "redis.pid").read_text()), signal.SIGKILL)
        shutil.copy(tmp_path / "older.aof", aof)  # the restart lost what came after the copy
        server.start()
        _ends_done_with_every_segment_once(env, job_id, up)
    finally:
        up.stop()
        server.stop()


def test_a_client_that_loses_redis_mid_command_says_so_in_one_line(tmp_path):
    embedded = EmbeddedRedis(tmp_path / "redis-home")
    url = embedded.start()
    try:
        r = redis.Redis.from_url(url)
        StreamRegistry(r).register(StreamSpec(name="door", url="rtsp://10.0.0.7/stream1", weights="none"))
        env = stack_env(tmp_path / "home", REELFLOW_REDIS_URL=url)
        tail = subprocess.Popen([REELFLOW, "tail", "door"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while not any(c.get("cmd") == "xread" for c in r.client_list()):  # connected, waiting for results
            assert tail.poll() is None and time.monotonic() < deadline, tail.communicate()
            time.sleep(0.1)
    finally:
        embedded.stop()
    out, err = tail.communicate(timeout=120)
    assert tail.returncode == 1 and out == "", err
    assert err.startswith("reelflow: error: lost Redis (") and "is the stack up?" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
