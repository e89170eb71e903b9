"""Redis goes away under a running stack and comes back (issue 17, part 1): `up` waits for it,
says so once, and carries on; the job in hand ends with every segment stored exactly once; clients
that find Redis gone say so in one line."""

from __future__ import annotations

import json
import time

import pytest

from services.store.embedded import EmbeddedRedis
from support.stack_process import UpProcess, run, stack_env


@pytest.fixture
def long_video(video_dir):
    from pipelines.synthetic import make_video

    path = video_dir / "outage_30s.mp4"
    if not path.exists():
        make_video(path, seconds=30.0, fps=15, size=(160, 120))
    return path


def _status(env, job_id: str) -> dict:
    return json.loads(run(env, "status", job_id, "--json").stdout)


def test_redis_restarted_mid_job_loses_nothing_and_stores_nothing_twice(tmp_path, long_video):
    home = tmp_path / "home"
    env = stack_env(home)
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        job_id = json.loads(run(env, "submit", long_video, "--weights", "none", "--stride", "0.25",
                                "--no-embeddings", "--json").stdout)["job_id"]
        deadline = time.monotonic() + 120
        while _status(env, job_id)["segments_done"] < 3:
            assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
            time.sleep(0.05)
        redis = EmbeddedRedis(home)
        redis.stop()  # SHUTDOWN: the append-only file is flushed, as a managed Redis's restart does
        time.sleep(4)  # longer than a client's own retries: the worker must wait it out
        assert up.proc.poll() is None, f"up died with Redis:\n{up.log_path.read_text()[-3000:]}"
        down = run(env, "status", check=False)
        assert down.returncode == 1 and down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
        redis.start()

        deadline = time.monotonic() + 240
        while (state := _status(env, job_id))["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, up.log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert state["state"] == "done", state
        segments = [json.loads(line) for line in run(env, "results", job_id).stdout.splitlines()]
        assert [s["index"] for s in segments] == list(range(state["segments_total"]))  # each once, none missing
        assert up.proc.poll() is None
        log = up.log_path.read_text()
        assert log.count("Redis is unreachable") == 1 and "Redis is back" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        up.stop()
