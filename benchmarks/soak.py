"""`make soak`: a day of load, compressed (issue 17, part 6). Not part of `make test`.

A `reelflow up` stack (Ray pipeline, embedded Redis, random weights) takes a steady stream of short
jobs and classifies live cameras (local videos played live and looped) for the whole run; a third
of the way in its Redis is restarted (SIGTERM: a clean shutdown, as a maintenance restart; `up`
starts it again from its append-only file), two thirds in a model replica is SIGKILLed. Every 30 s
it samples each long-lived process of the stack (RSS, open file descriptors, threads) and Redis's
memory. At the end: every job must have ended `done` with every segment, every camera must have
published windows with no index twice; the report compares the first sample after warm-up with the
last one (growth of RSS, fds, threads per process kind) and is written to benchmarks/soak.md.

    $ python benchmarks/soak.py [--jobs 2000] [--cameras 8] [--minutes 30]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulk import MB, REELFLOW, Stack, proc_stats  # noqa: E402

from pipelines.synthetic import make_video  # noqa: E402
from services.settings import settings_for  # noqa: E402
from services.store.connection import connect  # noqa: E402
from services.store.jobs import JobSpec  # noqa: E402
from services.store.outage import StoreUnavailable  # noqa: E402

SAMPLE_EVERY_S = 30.0
WARM_UP = 0.15  # of the run: the first sample compared is the first after this


def sample(session: int, queue) -> dict:
    """Per process of the stack's session: kind, rss, fds, threads; and Redis's used memory."""
    procs = {}
    for pid, s in proc_stats().items():
        if s["session"] != session:
            continue
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            threads = int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Threads:")))
        except (OSError, StopIteration):
            continue
        procs[pid] = {"kind": s["comm"], "rss": s["rss"], "fds": fds, "threads": threads}
    try:
        redis_memory = int(queue.r.info("memory")["used_memory"])
    except StoreUnavailable:
        redis_memory = None
    return {"at": time.monotonic(), "procs": procs, "redis_memory": redis_memory}


def by_kind(snapshot: dict) -> dict[str, dict]:
    kinds: dict[str, dict] = defaultdict(lambda: {"n": 0, "rss": 0, "fds": 0, "threads": 0})
    for p in snapshot["procs"].values():
        k = kinds[p["kind"]]
        k["n"] += 1
        for field in ("rss", "fds", "threads"):
            k[field] += p[field]
    return dict(kinds)


def kill_a_replica(session: int) -> int | None:
    for pid, s in proc_stats().items():
        if s["session"] == session and s["comm"].startswith("ray::ServeRepl"):
            os.kill(pid, signal.SIGKILL)
            return pid
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--model", default="x3d_xs")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "soak.md"))
    args = parser.parse_args()
    duration_s = args.minutes * 60
    media = Path(tempfile.mkdtemp(prefix="reelflow-soak-"))
    videos = []
    for i, seconds in enumerate((2.0, 3.0, 4.0)):
        videos.append(media / f"job{i}.mp4")
        make_video(videos[-1], seconds=seconds, fps=15, size=(160, 120), seed=i)
    camera = media / "camera.mp4"
    make_video(camera, seconds=5.0, fps=15, size=(320, 240))

    events, job_ids, submit_retries = [], [], 0
    with Stack(args.model) as stack:
        os.environ["REELFLOW_HOME"] = str(stack.home)
        queue = connect(settings_for(stack.home))
        for c in range(args.cameras):
            subprocess.run([REELFLOW, "watch", str(camera), "--name", f"cam{c}", "--weights", "none", "--model",
                            args.model], env=stack.env, check=True, capture_output=True)
        session = stack.proc.pid
        samples = [sample(session, queue)]
        started = time.monotonic()
        restarted_redis = killed_replica = False
        print(f"soak: {args.jobs} jobs and {args.cameras} cameras for {args.minutes:g} min", flush=True)
        while (elapsed := time.monotonic() - started) < duration_s:
            due = min(args.jobs, int(args.jobs * elapsed / (duration_s * 0.9)) + 1)
            while len(job_ids) < due:
                try:
                    job_ids.append(queue.submit(JobSpec(source=str(videos[len(job_ids) % 3]), model=args.model,
                                                        weights="none", embeddings=False))[0])
                except StoreUnavailable:  # Redis restarting: a client retries
                    submit_retries += 1
                    time.sleep(0.5)
                    break
            if not restarted_redis and elapsed > duration_s / 3:
                os.kill(stack.redis_pid(), signal.SIGTERM)
                events.append(f"{elapsed / 60:.1f} min: Redis stopped (SIGTERM); `up` restarts it")
                restarted_redis = True
            if not killed_replica and elapsed > 2 * duration_s / 3:
                pid = kill_a_replica(session)
                events.append(f"{elapsed / 60:.1f} min: model replica pid {pid} SIGKILLed")
                killed_replica = True
            if time.monotonic() - samples[-1]["at"] >= SAMPLE_EVERY_S:
                samples.append(sample(session, queue))
                s = samples[-1]
                print(f"soak: {elapsed / 60:5.1f} min, {len(job_ids)} jobs submitted, stack RSS "
                      f"{sum(p['rss'] for p in s['procs'].values()) / MB:.0f} MB", flush=True)
            time.sleep(0.2)
        last = sample(session, queue)
        # every job ends
        deadline = time.monotonic() + 900
        while True:
            try:
                records = [r for i in range(0, len(job_ids), 200)
                           for r in queue.records(job_ids[i:i + 200]).values()]
            except StoreUnavailable:
                time.sleep(1)
                continue
            open_jobs = [r for r in records if r is None or not r.state.terminal]
            if not open_jobs or time.monotonic() > deadline:
                break
            time.sleep(2)
        states = defaultdict(int)
        incomplete = 0
        for r in records:
            states[r.state.value if r else "missing"] += 1
            if r and r.state.value == "done" and r.segments_done != r.segments_total:
                incomplete += 1
        registry = queue.stream_registry()
        cameras = {}
        for c in range(args.cameras):
            indices = [r["index"] for _, r in registry.recent(f"cam{c}", 100_000)]
            status = registry.status(f"cam{c}")
            cameras[f"cam{c}"] = {"windows": len(indices), "twice": len(indices) - len(set(indices)),
                                  **{k: status.get(k) for k in ("dropped", "failed", "unpublished", "reconnects")}}
        log = stack.log()

    warm = next(s for s in samples if s["at"] - samples[0]["at"] >= WARM_UP * duration_s) if len(samples) > 2 \
        else samples[0]
    report = render(args, warm, last, events, states, incomplete, cameras, submit_retries, log)
    Path(args.out).write_text(report)
    print(report)
    ok = set(states) == {"done"} and not incomplete and all(c["windows"] and not c["twice"] for c in cameras.values())
    return 0 if ok else 1


def render(args, warm, last, events, states, incomplete, cameras, submit_retries, log) -> str:
    first_k, last_k = by_kind(warm), by_kind(last)
    lines = [f"# Soak: {args.jobs} jobs, {args.cameras} cameras, {args.minutes:g} min "
             f"({datetime.date.today().isoformat()}, this machine: {os.cpu_count()} CPUs)", "",
             f"`python benchmarks/soak.py --jobs {args.jobs} --cameras {args.cameras} --minutes {args.minutes:g}`; "
             f"first sample after {WARM_UP:.0%} of the run against the last.", "",
             "## Events", "", *[f"- {e}" for e in events], "",
             "## Jobs", "", f"- states: {dict(states)}; done but missing segments: {incomplete}; "
             f"submits retried while Redis was away: {submit_retries}",
             f"- log: {log.count('Redis is unreachable')} outage(s) said, {log.count('Traceback')} tracebacks", "",
             "## Cameras", "", "| camera | windows | twice | dropped | failed | unpublished | reconnects |",
             "|---|---|---|---|---|---|---|",
             *[f"| {n} | {c['windows']} | {c['twice']} | {c['dropped']} | {c['failed']} | {c['unpublished']} | "
               f"{c['reconnects']} |" for n, c in cameras.items()], "",
             "## Processes (summed per kind)", "",
             "| kind | n | RSS start MB | RSS end MB | growth | fds start/end | threads start/end |",
             "|---|---|---|---|---|---|---|"]
    for kind in sorted(set(first_k) | set(last_k)):
        a, b = first_k.get(kind, {"n": 0, "rss": 0, "fds": 0, "threads": 0}), last_k.get(kind)
        if b is None:
            continue
        growth = f"{(b['rss'] - a['rss']) / a['rss']:+.1%}" if a["rss"] else "new"
        lines.append(f"| {kind} | {b['n']} | {a['rss'] / MB:.0f} | {b['rss'] / MB:.0f} | {growth} | "
                     f"{a['fds']}/{b['fds']} | {a['threads']}/{b['threads']} |")
    if "Traceback" in log:  # say which, so that it can be looked into
        at = log.index("Traceback")
        lines += ["", "The first traceback in `up`'s log:", "", "```", *log[at:].splitlines()[:25], "```"]
    memory = [m for m in (warm["redis_memory"], last["redis_memory"]) if m is not None]
    if len(memory) == 2:
        lines += ["", f"Redis used memory: {memory[0] / MB:.1f} MB after warm-up, {memory[1] / MB:.1f} MB at the end."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
