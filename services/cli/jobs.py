"""`reelflow submit / status / results / cancel / dlq`: clients of a running stack.

They import neither torch nor PyAV, so they start fast.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from pipelines.errors import ReelflowError
from services.stack import connect, settings_for


def _queue(args):
    return connect(settings_for(args.home))


def _is_url(source: str) -> bool:
    return "://" in source


def run_submit(args) -> int:
    queue = _queue(args)
    submitted, refused = submit_sources(queue, args)
    if args.wait and submitted:
        ok = wait_for(queue, [job_id for job_id, _ in submitted], json_output=args.json)
        return 0 if ok and not refused else 1
    return 1 if refused else 0


def submit_sources(queue, args) -> tuple[list[tuple[str, str]], int]:
    """Submit each of `args.sources`; returns [(job id, source)] and how many were refused."""
    from services import telemetry
    from services.jobs import JobSpec

    telemetry.setup("reelflow-client")
    submitted, refused = [], 0
    for source in args.sources:
        try:
            source = check_job_source(queue.settings, source)
        except ReelflowError as e:
            print(f"reelflow: error: {e} (not submitted)", file=sys.stderr)
            refused += 1
            continue
        key = f"{args.idempotency_key}/{source}" if getattr(args, "idempotency_key", None) else None
        with telemetry.tracer().start_as_current_span("reelflow.submit", attributes={"reelflow.source": source}):
            try:
                spec = JobSpec(source=source, model=args.model, weights=args.weights, topk=args.topk,
                               stride_s=args.stride, embeddings=not args.no_embeddings, idempotency_key=key,
                               priority=getattr(args, "priority", 0), trace=telemetry.current_context())
            except ValueError as e:
                raise ReelflowError(str(e).splitlines()[-1]) from None
            job_id, created = queue.submit(spec)
        submitted.append((job_id, source))
        if getattr(args, "json", False):
            print(json.dumps({"job_id": job_id, "source": source, "created": created}), flush=True)
        else:
            print(f"{job_id}  {source}{'' if created else '  (already submitted)'}", flush=True)
    return submitted, refused


def check_job_source(settings, source: str) -> str:
    """A job's source as the queue should get it: a local path made absolute, checked to be a file
    inside the allowed roots; a URL checked against the scheme and host policy. Refusals raise."""
    from pipelines.errors import VideoError

    if _is_url(source):
        return settings.sources.check(source)
    path = Path(source).expanduser()
    checked = settings.sources.check(str(path.resolve()))  # the roots first: say nothing of files outside
    if not path.is_file():
        raise VideoError(f"{source!r} is not a file; check the path")
    return checked


def wait_for(queue, job_ids: list[str], json_output: bool = False) -> bool:
    """Follow jobs until each has ended; a progress line on a terminal, a line per ended job otherwise.

    Polls the jobs not ended yet in one round trip, every 0.1 s (slower for thousands of jobs)."""
    tty = sys.stderr.isatty() and not json_output
    started = time.monotonic()
    reported: set[str] = set()
    records: dict = {}
    while True:
        records.update(queue.records([j for j in job_ids if j not in reported]))
        ended = {j for j, r in records.items() if r is None or r.state.terminal}
        for j in sorted(ended - reported):
            r = records[j]
            line = r.summary() if r else {"job_id": j, "state": "expired"}
            if json_output:
                print(json.dumps(line), flush=True)
            else:
                if tty:
                    print("\r\033[K", end="", file=sys.stderr)
                err = f"  {r.error}" if r and r.error and r.state.value != "done" else ""
                total = r.segments_total if r and r.segments_total is not None else "?"
                print(f"{j}  {line['state']:<9} {r.segments_done if r else 0}/{total} segments{err}",
                      flush=True)
            reported.add(j)
        if len(ended) == len(job_ids):
            break
        if tty:
            done = sum(r.segments_done for r in records.values() if r)
            total = sum(r.segments_total or 0 for r in records.values() if r)
            elapsed = time.monotonic() - started
            eta = f"{(total - done) * elapsed / done:.0f} s" if done and total else "?"
            width = 30
            fill = int(width * done / total) if total else 0
            print(f"\r\033[K[{'#' * fill}{'.' * (width - fill)}] {done}/{total or '?'} segments, "
                  f"{len(ended)}/{len(job_ids)} jobs ended, ETA {eta}", end="", file=sys.stderr, flush=True)
        time.sleep(max(0.1, (len(job_ids) - len(ended)) / 5000))
    return all(records[j] is not None and records[j].state.value == "done" for j in job_ids)


def run_status(args) -> int:
    queue = _queue(args)
    if args.job:
        record = queue.record(args.job)
        if record is None:
            raise ReelflowError(f"no job {args.job!r} (finished jobs expire after REELFLOW_RESULT_TTL_S)")
        summary = record.summary()
        if args.json:
            print(json.dumps(summary))
        else:
            for key in ("job_id", "state", "source", "model", "weights", "segments_done", "segments_total",
                        "attempts", "error"):
                if summary.get(key) not in (None, ""):
                    print(f"{key:<15} {summary[key]}")
        return 0
    overview = stack_overview(queue)
    states, workers = overview["jobs"], overview["workers"]
    if args.json:
        print(json.dumps(overview))
        return 0
    depth = overview["queue"]
    print(f"queue    {depth['waiting']} waiting, {depth['pending']} claimed, {depth['retrying']} retrying")
    print("jobs     " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"))
    print(f"models   {len(overview['models'])}" + "".join(
        f"\n  {m['name']} (weights {m['weights']}): {m['replicas']} replica(s)" for m in overview["models"]))
    print(f"workers  {len(workers)}" + "".join(
        f"\n  {w['name']} ({w['pipeline']}, {w['pending']} job(s) held)" for w in workers))
    print(f"dlq      {overview['dead_letters']}")
    return 0


def stack_overview(queue) -> dict:
    """Queue depth, jobs by state (the latest 1000), models and their replicas, workers, dead letters."""
    states: dict[str, int] = {}
    for job_id in queue.job_ids(limit=1000):
        state = queue.state(job_id)
        if state is not None:
            states[state.value] = states.get(state.value, 0) + 1
    workers = queue.workers()
    return {"queue": queue.depth(), "jobs": states, "models": models_served(workers), "workers": workers,
            "dead_letters": len(queue.dead_letters())}


def models_served(workers: list[dict]) -> list[dict]:
    """Replicas per (model, weights) over all live workers; workers sharing a Ray cluster count once."""
    seen: set[str] = set()
    models: dict[tuple[str, str], dict] = {}
    for worker in workers:
        for m in worker.get("models", []):
            if m["serving"] in seen:
                continue
            seen.add(m["serving"])
            entry = models.setdefault((m["model"], m["weights"]),
                                      {"name": m["model"], "weights": m["weights"], "replicas": 0, "workers": []})
            entry["replicas"] += m["replicas"]
            entry["workers"].append(worker["name"])
    return list(models.values())


CSV_COLUMNS = ["job_id", "index", "start_s", "end_s", "frames", "model", "weights", "labels", "scores"]


def run_results(args) -> int:
    queue = _queue(args)
    if queue.record(args.job) is None:
        raise ReelflowError(f"no job {args.job!r} (finished jobs expire after REELFLOW_RESULT_TTL_S)")
    segments = queue.segments(args.job)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        if args.format == "csv":
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for s in segments:
                writer.writerow([s.get("job_id", args.job), s["index"], s["start_s"], s["end_s"], s["frames"],
                                 s["model"], s["weights"], "|".join(s["labels"]),
                                 "|".join(f"{x:.6g}" for x in s["scores"])])
        else:
            for s in segments:
                out.write(json.dumps(s) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def run_cancel(args) -> int:
    state = _queue(args).cancel(args.job)
    if state is None:
        raise ReelflowError(f"no job {args.job!r}")
    print(f"{args.job}  {state.value}")
    return 0


def run_dlq(args) -> int:
    queue = _queue(args)
    if args.action == "replay":
        if not args.job:
            raise ReelflowError("dlq replay needs a job id: reelflow dlq replay JOB")
        if not queue.replay(args.job):
            raise ReelflowError(f"job {args.job!r} is not in the dead-letter list (or cannot run: malformed)")
        print(f"{args.job}  queued again")
        return 0
    entries = queue.dead_letters()
    if args.json:
        for e in entries:
            print(json.dumps(e))
    else:
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
            print(f"{e['job_id']}  {when}  {e['error']}")
        if not entries:
            print("dead-letter list is empty")
    return 0

