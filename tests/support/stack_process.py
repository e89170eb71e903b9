"""Running a real stack for tests: `reelflow up` as a subprocess on its own home."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REELFLOW = str(Path(sys.executable).parent / "reelflow")


def reelflow(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True
             ) -> subprocess.CompletedProcess:
    """One `reelflow` command in a fresh process (this checkout's code, from any working directory);
    with `check`, it must exit 0."""
    result = subprocess.run([sys.executable, "-m", "services", *args], capture_output=True, text=True, cwd=cwd,
                            timeout=600, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                                              **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def fast_settings(redis_url: str | None = None, home: Path | None = None, **overrides):
    """Settings with short leases and retries, for tests on a real Redis."""
    from services.settings import Settings

    base = dict(redis_url=redis_url, home=home, lease_s=1.0, max_attempts=3, retry_base_s=0.05, result_ttl_s=3600)
    # model_validate, not Settings(...): the test's settings, whatever REELFLOW_* this shell has
    return Settings.model_validate({k: v for k, v in {**base, **overrides}.items() if v is not None})


def stack_env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "REELFLOW_REDIS_URL"}
    # tests read videos from tmp and shared/; the default (the stack's working directory) is tested on its own
    env.update({"REELFLOW_HOME": str(home), "REELFLOW_ALLOWED_ROOTS": "/", **extra})
    return env


class UpProcess:
    """`reelflow up` in its own process group, with its log kept for failed assertions."""

    def __init__(self, home: Path, env: dict, *args: str, cwd: Path | None = None, prefix: tuple[str, ...] = (),
                 ready_within: float | None = None):
        """`prefix`: a command that runs `up` (`ip netns exec NS`, say); `ready_within`: seconds `up` has
        to say it is ready (default 60 in-process, 180 on Ray: a busy 2-core machine starts Ray's worker
        processes for the replicas slowly)."""
        ready_within = ready_within or (60 if "--no-ray" in args else 180)
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / f"up-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([*prefix, REELFLOW, "up", *args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=cwd)
        deadline = time.monotonic() + ready_within
        while " ready. " not in self.log_path.read_text():  # up's own line, not Serve's "... is ready."
            if self.proc.poll() is not None or time.monotonic() > deadline:
                if self.proc.poll() is None:  # not left running (and holding a Ray) for the tests after it
                    try:
                        self.stop()
                    except AssertionError:
                        pass  # it ignored SIGTERM and was killed; that it did not start is the news
                raise AssertionError(f"reelflow up did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole process group of `up`."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, which must end `up` within a minute (else: SIGKILL, and the test fails)."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.kill()
                    raise AssertionError(f"reelflow up ignored SIGTERM for 60 s:\n{self.log_path.read_text()[-3000:]}")
        finally:
            self.log.close()


def wait_until(condition, timeout_s: float, what: str, *ups: UpProcess):
    """`condition()`'s first truthy value, asked every 0.2 s; fails, with the logs of `ups`, after
    `timeout_s` or as soon as one of them has exited."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline or any(up.proc.poll() is not None for up in ups):
            logs = "\n\n".join(up.log_path.read_text()[-3000:] for up in ups)
            raise AssertionError(f"{what} within {timeout_s:.0f} s\n{logs}")
        time.sleep(0.2)
    return value


def run(env: dict, *args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([REELFLOW, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, f"reelflow {' '.join(map(str, args))}: {result.stderr}"
    return result


def free_port(below: int = 65536) -> int:
    """A TCP port on loopback that nothing listens on (now), under `below` (a Redis cluster node needs
    its port + 10000 free too: below 55536)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            if (port := s.getsockname()[1]) < below:
                return port


@contextmanager
def http_stack(base: Path, video: Path, token: str, default_roots: bool = False) -> Iterator[dict]:
    """`reelflow up --weights none --http-port P` with REELFLOW_API_TOKEN set, started in `base`/videos
    (holding `video` as a.mp4); `default_roots`: no REELFLOW_ALLOWED_ROOTS, so that directory is the root."""
    videos = base / "videos"
    videos.mkdir(exist_ok=True)
    shutil.copy(video, videos / "a.mp4")
    # two replicas at most: the autoscaling test floods one machine (the default, 1, suits one machine)
    env = stack_env(base / "home", REELFLOW_API_TOKEN=token, REELFLOW_MAX_REPLICAS="2")
    if default_roots:
        del env["REELFLOW_ALLOWED_ROOTS"]
    port = free_port()
    up = UpProcess(base / "home", env, "--weights", "none", "--http-port", str(port), cwd=videos)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "videos": videos, "env": env, "home": base / "home", "up": up}
    finally:
        up.stop()
