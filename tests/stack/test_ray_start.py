"""A local Ray that does not come up in time (issue 17, part 5): on a busy machine the raylet can
miss the 30 s Ray gives it to register with the GCS. `up` stops what the failed try started and
tries again until REELFLOW_RAY_START_TIMEOUT_S has passed; then it stops with one line naming that
setting, leaving nothing running, and the next `up` on the same home works.

The slow raylet is real: Ray runs its raylet under `valgrind --tool=callgrind` when
RAY_RAYLET_VALGRIND_PROFILER=1, and the `valgrind` these tests put first on PATH holds the raylet
back (it never starts it) for the first N starts.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pipelines.synthetic import make_video
from support.processes import descendants, ray_processes_of, start_time
from support.stack_process import REELFLOW, UpProcess, run, stack_env, wait_until

pytestmark = pytest.mark.slow  # a failed try costs Ray's 30 s

SLOW_RAYLET = """#!/bin/sh
# valgrind --tool=callgrind RAYLET ARGS...: the first $HOLD_BACK raylets never start (a busy machine)
starts=$(( $(cat "$STARTS_FILE" 2>/dev/null || echo 0) + 1 ))
echo "$starts" > "$STARTS_FILE"
shift
if [ "$starts" -le "$HOLD_BACK" ]; then exec sleep 3600; fi
exec "$@"
"""


def _slow_raylet_env(tmp_path: Path, hold_back: int, **extra: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "valgrind").write_text(SLOW_RAYLET)
    (bin_dir / "valgrind").chmod(0o755)
    env = stack_env(tmp_path / "home", RAY_RAYLET_VALGRIND_PROFILER="1", HOLD_BACK=str(hold_back),
                    STARTS_FILE=str(tmp_path / "starts"), **extra)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def _job_is_done(env: dict, video: Path) -> bool:
    """Submits a job and follows it: `submit --wait` exits 0 only once it is done."""
    return run(env, "submit", video, "--weights", "none", "--no-embeddings", "--wait", check=False,
               timeout=300).returncode == 0


def test_a_ray_start_that_runs_out_of_time_is_one_line_leaves_nothing_and_the_next_up_works(tmp_path, video_dir):
    env = _slow_raylet_env(tmp_path, hold_back=99, REELFLOW_RAY_START_TIMEOUT_S="1")
    home = tmp_path / "home"
    home.mkdir()
    log_path = home / "failed-up.log"
    with open(log_path, "w") as log:
        up = subprocess.Popen([REELFLOW, "up", "--weights", "none"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    seen: dict[int, int | None] = {}  # every process `up` started while it ran -> its start time
    deadline = time.monotonic() + 180
    while up.poll() is None and time.monotonic() < deadline:
        for pid in descendants(up.pid):
            seen.setdefault(pid, start_time(pid))
        time.sleep(0.2)
    if up.poll() is None:
        up.kill()
        raise AssertionError(f"up neither started nor gave up within 180 s:\n{log_path.read_text()[-3000:]}")
    output = log_path.read_text()
    last = output.strip().splitlines()[-1]
    assert up.returncode != 0, output[-3000:]
    assert last.startswith("reelflow: error: Ray did not start") and "REELFLOW_RAY_START_TIMEOUT_S" in last, output
    assert "Traceback" not in output, output[-3000:]
    assert (tmp_path / "starts").read_text().strip() == "1"  # one try: the timeout had passed
    assert len(seen) >= 3, seen  # the embedded redis-server, Ray's GCS, the held-back raylet, ...
    time.sleep(2)
    left = [pid for pid, started in seen.items() if started is not None and start_time(pid) == started]
    assert not left, {pid: descendants(pid) for pid in left}  # nothing of the failed start runs on

    env = stack_env(home)  # the next `up`, on the same home, with a raylet that starts
    make_video(video_dir / "raystart.mp4", seconds=3.0, fps=15, size=(160, 120))
    up = UpProcess(home, env, "--weights", "none")
    try:
        assert _job_is_done(env, video_dir / "raystart.mp4")
    finally:
        up.stop()


def test_up_stops_a_ray_start_that_ran_out_of_time_and_tries_again(tmp_path, video_dir):
    env = _slow_raylet_env(tmp_path, hold_back=1)
    home = tmp_path / "home"
    up = UpProcess(home, env, "--weights", "none", ready_within=240)
    try:
        log = up.log_path.read_text()
        assert log.count("Ray did not start") == 1 and "trying again" in log, log[-3000:]
        assert (tmp_path / "starts").read_text().strip() == "2"
        running = sorted(descendants(up.proc.pid).values())
        assert running.count("gcs_server") == 1 and running.count("raylet") == 1, running  # the first try's are gone
        assert "sleep" not in running, running  # the held-back raylet too
        make_video(video_dir / "raystart2.mp4", seconds=3.0, fps=15, size=(160, 120))
        assert _job_is_done(env, video_dir / "raystart2.mp4")
    finally:
        up.stop()
    wait_until(lambda: not ray_processes_of(up.proc.pid), 15, "Ray processes outlived up")
