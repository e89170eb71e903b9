"""The Ray node under `reelflow up` dies (issue 17, part 2): its raylet is SIGKILLed, as the OOM
killer does (the raylet also exits when one of its agents dies). A Ray that `up` started is started
again and the models redeployed, and the job and the stream in hand carry on: every segment stored
once, no window published twice. A Ray cluster `up` joined is not its to restart: `up` exits
non-zero with one line, for its supervisor to restart it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pipelines.synthetic import make_video
from services.store.streams import StreamRegistry
from support.processes import children, processes_mentioning, ray_processes_of
from support.stack_process import UpProcess, free_port, run, stack_env, wait_until

pytestmark = pytest.mark.slow  # Ray starts twice per test: `make test-slow`


def _job_state(env, job_id: str) -> dict:
    return json.loads(run(env, "status", job_id, "--json").stdout)


def test_up_restarts_the_ray_it_started_when_its_raylet_is_killed(tmp_path, video_dir):
    video, camera = video_dir / "raydeath_40s.mp4", video_dir / "raydeath_camera.mp4"
    make_video(video, seconds=40.0, fps=15, size=(160, 120))
    make_video(camera, seconds=3.0, fps=25, size=(160, 120))
    home = tmp_path / "home"
    env = stack_env(home, REELFLOW_LEASE_S="10")
    up = UpProcess(home, env, "--weights", "none")
    try:
        registry = StreamRegistry(redis.Redis.from_url((home / "redis" / "url").read_text().strip()))
        run(env, "watch", camera, "--name", "cam", "--weights", "none")
        job_id = json.loads(run(env, "submit", video, "--weights", "none", "--stride", "0.25", "--no-embeddings",
                                "--json").stdout)["job_id"]
        wait_until(lambda: _job_state(env, job_id)["segments_done"] >= 3 and len(registry.recent("cam", 5)) >= 2, 180,
               "no progress before the kill", up)
        [raylet] = [pid for pid, name in children(up.proc.pid).items() if name == "raylet"]
        os.kill(raylet, signal.SIGKILL)
        wait_until(lambda: "the pipeline is back" in up.log_path.read_text(), 300, "up did not restart Ray", up)
        published_before = {i for i, _ in registry.recent("cam", 10_000)}
        state = wait_until(lambda: (s := _job_state(env, job_id))["state"] in ("done", "failed") and s, 300,
                       "the job did not end after the restart", up)
        assert state["state"] == "done", state
        segments = [json.loads(line) for line in run(env, "results", job_id).stdout.splitlines()]
        assert [s["index"] for s in segments] == list(range(state["segments_total"]))  # none missing, none twice
        wait_until(lambda: {i for i, _ in registry.recent("cam", 10_000)} - published_before, 120,
               "the stream published nothing after the restart", up)
        indices = [r["index"] for _, r in registry.recent("cam", 10_000)]
        assert indices == sorted(set(indices)), indices  # no window twice
        log = up.log_path.read_text()
        assert "Ray's raylet (pid" in log and log.count("restarting Ray and redeploying") == 1, log[-4000:]
        assert "its runner died; restarting it" not in log[log.index("the pipeline is back"):], log[-4000:]
        assert up.proc.poll() is None
    finally:
        up.stop()
    deadline = time.monotonic() + 15
    while (left := ray_processes_of(up.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left  # neither Ray, the dead one's nor the new one, outlives `up`


def test_up_on_a_joined_cluster_exits_in_one_line_when_its_node_dies(tmp_path):
    temp = Path("/tmp") / f"rf-joined-{os.getpid()}"  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    no_token = {"RAY_AUTH_MODE": "disabled"}  # the test is about a dead node, not about handing out the token
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True, timeout=120,
                   env={**os.environ, **no_token})
    try:
        home = tmp_path / "home"
        env = stack_env(home, RAY_ADDRESS=f"127.0.0.1:{port}", **no_token)
        up = UpProcess(home, env, "--weights", "none")
        try:
            [raylet] = processes_mentioning(str(temp), b"raylet")
            os.kill(raylet, signal.SIGKILL)
            up.proc.wait(timeout=120)
        finally:
            up.stop()
        log = up.log_path.read_text()
        last = log.strip().splitlines()[-1]
        assert up.proc.returncode == 1, log[-3000:]
        assert last.startswith("reelflow: ") and "joined a Ray cluster it did not start" in last, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        for pid in processes_mentioning(str(temp)):  # that cluster only (`ray stop` would stop every Ray here)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
