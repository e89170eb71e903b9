"""The bulk path of `make bench`: a real `reelflow up` stack fed by `reelflow submit --wait`.

- start-up: from launching `reelflow up --weights none --model M` to its "ready" line (by then Redis,
  Ray and the model's Serve replica are running).
- bulk: wall time of `reelflow submit --wait --weights none --model M VIDEO...` on that stack (client
  start-up and its polling included); clips = the segments its jobs stored; and the jobs' span,
  from the first job's submission to the last one's end as their records say (the stack's part).
- memory: the summed RSS of every process in `up`'s session (the `up` process, Ray's GCS, raylet,
  workers, decoder actor and Serve replicas), sampled every 0.2 s while one job runs. The embedded
  Redis runs in a session of its own (it may outlive `up`) and is reported apart: it keeps the results.

Each stack gets a fresh temporary REELFLOW_HOME and runs in its own session; it is always stopped
(SIGTERM, then SIGKILL after 30 s) and its home removed, on errors and Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REELFLOW = str(Path(sys.executable).parent / "reelflow")
READY = re.compile(r"\bready\b")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


class StackError(RuntimeError):
    """The stack did not start, or a job on it did not end done."""


class Stack:
    """`reelflow up --weights none --model M` in its own session, on a fresh temporary home.

        with Stack("x3d_xs") as stack:
            stack.startup_s, stack.submit_wait(paths)
    """

    def __init__(self, model: str, start_timeout_s: float = 300, stop_grace_s: float = 30,
                 env: dict[str, str] | None = None):
        """`env`: settings of this stack on top of the environment's (REELFLOW_METRICS=0, say)."""
        self.model = model
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self.home = Path(tempfile.mkdtemp(prefix="reelflow-bench-"))
        self.env = {k: v for k, v in os.environ.items() if k != "REELFLOW_REDIS_URL"}
        self.env["REELFLOW_HOME"] = str(self.home)
        self.env.setdefault("REELFLOW_ALLOWED_ROOTS", "/")  # the corpus lies in benchmarks/ and ../shared
        self.env.update(env or {})
        self.log_path = self.home / "up.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> float:
        """Launch `up` and wait for its ready line; returns (and keeps) the start-up seconds."""
        with open(self.log_path, "w") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen([REELFLOW, "up", "--weights", "none", "--model", self.model],
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        while not READY.search(self.log()):
            if self.proc.poll() is not None:
                raise StackError(f"reelflow up exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.perf_counter() - started > self.start_timeout_s:
                raise StackError(f"reelflow up not ready after {self.start_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - started
        if "reelflow up: warning" in self.log():  # e.g. the model was not deployed: jobs would pay for it
            raise StackError(f"reelflow up warned at start-up:\n{self.log_tail()}")
        return self.startup_s

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def submit_wait(self, paths: list[Path], timeout_s: float = 3600) -> dict:
        """Time `reelflow submit --wait` over `paths`; every job must end done."""
        cmd = [REELFLOW, "submit", "--wait", "--json", "--weights", "none", "--model", self.model, *map(str, paths)]
        started = time.perf_counter()
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        seconds = time.perf_counter() - started
        ended = [line for line in map(json.loads, filter(None, out.stdout.splitlines())) if "state" in line]
        if out.returncode or len(ended) != len(paths) or any(job["state"] != "done" for job in ended):
            raise StackError(f"reelflow submit --wait exited with {out.returncode}:\n{out.stdout}{out.stderr}\n"
                             f"reelflow up log:\n{self.log_tail()}")
        # the jobs' span: from the first one's submission to the last one's end, as their records
        # say (the client's own start-up and its last poll are outside it)
        span = max(job["updated_at"] for job in ended) - min(job["created_at"] for job in ended)
        return {"clips": sum(job["segments_done"] for job in ended), "seconds": seconds, "span_s": span,
                "jobs": len(ended)}

    def redis_pid(self) -> int | None:
        pidfile = self.home / "redis" / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text())
        return None

    def stop(self) -> None:
        """SIGTERM `up` and wait; SIGKILL its process group after the grace time, and whatever of its
        session is left; stop the embedded Redis if `up` could not; remove the home."""
        with _sigint_ignored():
            try:
                if self.proc is not None:
                    self._stop_up()
                    _kill_session(self.proc.pid)
                self._stop_redis()
            finally:
                shutil.rmtree(self.home, ignore_errors=True)

    def _stop_up(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                print(f"bench: reelflow up still running {self.stop_grace_s:.0f} s after SIGTERM; SIGKILL",
                      file=sys.stderr, flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def _stop_redis(self) -> None:
        from services.store.embedded import EmbeddedRedis

        with contextlib.suppress(Exception):
            EmbeddedRedis(self.home).stop()  # a no-op when `up` stopped it
        pid = self.redis_pid()
        if pid is not None and _alive(pid, "redis"):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _sigint_ignored():
    """A second Ctrl-C must not cut the clean-up short (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _alive(pid: int, name: str) -> bool:
    stats = proc_stats().get(pid)
    return stats is not None and name in stats["comm"]


def _kill_session(session: int, grace_s: float = 5.0) -> None:
    """SIGKILL the processes still in a session (Ray's may take a moment to leave after `up` exits)."""
    deadline = time.monotonic() + grace_s
    while (left := session_pids(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def proc_stats() -> dict[int, dict]:
    """pid -> ppid, session, rss (bytes) and comm of every process, from /proc/PID/stat."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        # fields from the 3rd: state ppid pgrp session ... rss is the 24th
        stats[int(entry.name)] = {"ppid": int(rest[1]), "session": int(rest[3]), "rss": int(rest[21]) * PAGE,
                                  "comm": comm}
    return stats


def session_pids(session: int) -> list[int]:
    return [pid for pid, s in proc_stats().items() if s["session"] == session]


def descendants(stats: dict[int, dict], root: int) -> set[int]:
    """The process tree under `root` (by parent pid)."""
    children: dict[int, list[int]] = {}
    for pid, s in stats.items():
        children.setdefault(s["ppid"], []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class MemorySampler(threading.Thread):
    """Every `interval_s`: the summed RSS of a session's processes (peak kept), the RSS of one other
    process (the Redis), and which processes under the session leader are outside the session."""

    def __init__(self, session: int, other_pid: int | None = None, interval_s: float = 0.2):
        super().__init__(daemon=True, name="bench-memory")
        self.session, self.other_pid, self.interval_s = session, other_pid, interval_s
        self.halt = threading.Event()
        self.peak, self.peak_procs, self.peak_by_comm, self.other_peak, self.samples = 0, 0, {}, 0, 0
        self.outside: set[str] = set()

    def sample(self) -> None:
        stats = proc_stats()
        members = {pid: s for pid, s in stats.items() if s["session"] == self.session}
        total = sum(s["rss"] for s in members.values())
        if total > self.peak:
            self.peak, self.peak_procs = total, len(members)
            self.peak_by_comm = {}
            for s in members.values():
                self.peak_by_comm[s["comm"]] = self.peak_by_comm.get(s["comm"], 0) + s["rss"]
        if self.other_pid in stats:
            self.other_peak = max(self.other_peak, stats[self.other_pid]["rss"])
        self.outside |= {stats[p]["comm"] for p in descendants(stats, self.session) if p not in members}
        self.samples += 1

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval_s)

    def result(self) -> dict:
        return {
            "peak_mb": self.peak / MB, "processes_at_peak": self.peak_procs, "samples": self.samples,
            "redis_peak_mb": self.other_peak / MB, "outside_session": sorted(self.outside),
            "peak_mb_by_process": {k: round(v / MB) for k, v in sorted(self.peak_by_comm.items(), key=lambda kv: -kv[1])},
        }


def sampled(stack: Stack, fn) -> tuple[object, dict]:
    """Run fn() with a MemorySampler on the stack's session; (its result, the memory result)."""
    sampler = MemorySampler(stack.proc.pid, stack.redis_pid())
    sampler.sample()
    sampler.start()
    try:
        result = fn()
    finally:
        sampler.halt.set()
        sampler.join()
    sampler.sample()
    return result, sampler.result()


def bulk_rate(stack: Stack, paths: list[Path], repeats: int) -> dict:
    """The fastest of `repeats` runs of submit --wait over `paths` (new jobs each time), and the first
    run's time (on a fresh stack, its replicas scale out meanwhile)."""
    runs = [stack.submit_wait(paths) for _ in range(repeats)]
    assert len({r["clips"] for r in runs}) == 1, runs
    best = min(runs, key=lambda r: r["seconds"])
    return {"bulk_clips": best["clips"], "bulk_s": best["seconds"], "bulk_cps": best["clips"] / best["seconds"],
            "bulk_span_s": min(r["span_s"] for r in runs), "bulk_first_s": runs[0]["seconds"]}


def memory_by_length(stack: Stack, videos: dict[str, Path]) -> dict:
    """Per label: the memory of the stack's session while one job runs on that video, one after the other."""
    idle = MemorySampler(stack.proc.pid, stack.redis_pid())
    idle.sample()
    result = {"idle": idle.result()}
    for label, path in videos.items():
        print(f"[bulk] {stack.model}: memory, one job on {path.name} ...", flush=True)
        job, memory = sampled(stack, lambda p=path: stack.submit_wait([p]))
        result[label] = {**memory, "clips": job["clips"], "seconds": job["seconds"]}
    return result


if __name__ == "__main__":  # a smoke run: python benchmarks/bulk.py VIDEO...
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with Stack("x3d_xs") as s:
        print(f"start-up {s.startup_s:.1f} s; session {s.proc.pid}")
        print(json.dumps(memory_by_length(s, {p: Path(p) for p in sys.argv[1:]}), indent=2))
