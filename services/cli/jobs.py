"""`reelflow submit / status / results / cancel / dlq`: clients of a running stack.

They import neither torch nor PyAV, so they start fast.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from pipelines.errors import ReelflowError, one_line
from pipelines.progress import Bar
from services.cli.options import (add_index_option, add_json_option, add_model_options, add_overwrite_option,
                                  add_runtime_option, add_segment_options, add_sink_option)
from services.cli.output import SegmentWriter, check_output, output_file

if TYPE_CHECKING:  # Redis, pydantic and OpenTelemetry load in the commands, not with `--help`
    from services.store.queue import JobQueue

EXPIRED = "finished jobs expire after REELFLOW_RESULT_TTL_S"


def add_commands(commands, home) -> None:
    submit = commands.add_parser("submit", parents=[home], help="queue videos as jobs on a running stack",
                                 epilog="The job message is documented in the README; any Redis client can XADD one.")
    submit.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="video files or URLs")
    add_model_options(submit)
    add_runtime_option(submit, "its forward passes")
    add_segment_options(submit)
    add_index_option(submit, "the jobs' segments")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="resubmitting with the same key (per source) returns the first job instead of a new one")
    submit.add_argument("--priority", type=int, default=0, help="stored with the job (scheduling by priority: planned)")
    add_sink_option(submit, "each job's segments and its end")
    submit.add_argument("--wait", action="store_true", help="follow the jobs until they end; exit 0 only if all are done")
    add_json_option(submit)
    submit.set_defaults(run=run_submit)

    status = commands.add_parser("status", parents=[home], help="one job, or the whole stack")
    status.add_argument("job", nargs="?", metavar="JOB")
    add_json_option(status)
    status.set_defaults(run=run_status)

    results = commands.add_parser("results", parents=[home], help="a job's segment results")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="jsonl (default) or csv")
    results.add_argument("-f", "--follow", action="store_true",
                         help="print segments as they are stored, until the job ends (those stored already first)")
    results.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    add_overwrite_option(results)
    results.set_defaults(run=run_results)

    cancel = commands.add_parser("cancel", parents=[home], help="cancel a job that has not ended")
    cancel.add_argument("job", metavar="JOB")
    cancel.set_defaults(run=run_cancel)

    dlq = commands.add_parser("dlq", parents=[home], help="the dead-letter list: failed jobs and why")
    dlq.add_argument("action", nargs="?", choices=["list", "replay"], default="list")
    dlq.add_argument("job", nargs="?", metavar="ID", help="with replay: the job (or with --sinks, the batch) to queue again")
    dlq.add_argument("--sinks", action="store_true",
                     help="the sinks' dead-letter list instead: batches a sink refused or could not take in time")
    add_json_option(dlq)
    dlq.set_defaults(run=run_dlq)


def _queue(args) -> JobQueue:
    from services.settings import settings_for
    from services.store.connection import connect

    return connect(settings_for(args.home))


def run_submit(args) -> int:
    queue = _queue(args)
    submitted, refused = submit_sources(queue, args)
    if args.wait and submitted:
        ok = wait_for(queue, [s.job_id for s in submitted], json_output=args.json)
        return 0 if ok and not refused else 1
    return 1 if refused else 0


class Submitted(NamedTuple):
    job_id: str
    source: str  # as queued: a local path made absolute
    index: int  # its place among the sources given


def submit_sources(queue: JobQueue, args) -> tuple[list[Submitted], int]:
    """Submit each of `args.sources`; returns the jobs submitted and how many sources were refused."""
    from services import telemetry
    from services.sinks import check_sink_urls
    from services.store.jobs import JobSpec, check_job_source

    telemetry.setup("reelflow-client")
    sinks = getattr(args, "sinks", [])
    check_sink_urls(sinks, queue.settings, connect=True)  # a broker down, a bad URL: one line, nothing queued
    submitted, refused = [], 0
    for index, source in enumerate(args.sources):
        try:
            source = check_job_source(queue.settings.sources, source)
        except ReelflowError as e:
            print(f"reelflow: error: {one_line(e)} (not submitted)", file=sys.stderr)
            refused += 1
            continue
        key = f"{args.idempotency_key}/{source}" if getattr(args, "idempotency_key", None) else None
        with telemetry.tracer().start_as_current_span("reelflow.submit", attributes={"reelflow.source": source}):
            try:
                spec = JobSpec(source=source, model=args.model, weights=args.weights, topk=args.topk,
                               stride_s=args.stride, embeddings=not args.no_embeddings,
                               index=not getattr(args, "no_index", False),
                               idempotency_key=key,
                               sinks=sinks, runtime=getattr(args, "runtime", None) or "auto",
                               priority=getattr(args, "priority", 0), trace=telemetry.current_context())
            except ValueError as e:
                raise ReelflowError(one_line(e)) from None
            job_id, created = queue.submit(spec)
        submitted.append(Submitted(job_id, source, index))
        if getattr(args, "json", False):
            print(json.dumps({"job_id": job_id, "source": source, "created": created}), flush=True)
        else:
            print(f"{job_id}  {source}{'' if created else '  (already submitted)'}", flush=True)
    return submitted, refused


def wait_for(queue: JobQueue, job_ids: list[str], json_output: bool = False) -> bool:
    """Follow jobs until each has ended: a line per ended job, and on a terminal a progress bar of
    their segments. True if every job is done.

    Waits on the results stream (every stored segment and every job's end comes there) rather than
    polling: the jobs' records are read again at once when one of them ends, and otherwise every
    half second (slower for thousands of jobs) for the progress bar, and in case the stream was
    trimmed past an end meanwhile."""
    from services.store.results import END, ResultsStream

    stream = ResultsStream(queue.r)
    after = stream.last_id()  # before the records are first read: no end falls between the two
    mine = set(job_ids)
    reported: set[str] = set()
    records: dict = {}
    with Bar("waiting", unit="segment", quiet=json_output) as bar:
        while True:
            pending = [j for j in job_ids if j not in reported]
            records.update(queue.records(pending))
            ended = {j for j, r in records.items() if r is None or r.state.terminal}
            for j in sorted(ended - reported):
                bar.write(_ended_line(j, records[j], json_output))
                reported.add(j)
            bar.set(sum(r.segments_done for r in records.values() if r),
                    total=sum(r.segments_total or 0 for r in records.values() if r) or None)
            if len(ended) == len(job_ids):
                break
            read_again = time.monotonic() + max(0.5, len(pending) / 2000)
            while (left := read_again - time.monotonic()) > 0:
                entries = stream.read(after, block_ms=max(1, int(left * 1000)), count=10_000)
                if entries:
                    after = entries[-1].id
                if any(e.kind == END and e.job_id in mine for e in entries):
                    break
    return all(records[j] is not None and records[j].state.value == "done" for j in job_ids)


def _ended_line(job_id: str, record, json_output: bool) -> str:
    summary = record.summary() if record else {"job_id": job_id, "state": "expired"}
    if json_output:
        return json.dumps(summary)
    err = f"  {record.error}" if record and record.error and record.state.value != "done" else ""
    total = record.segments_total if record and record.segments_total is not None else "?"
    return f"{job_id}  {summary['state']:<9} {record.segments_done if record else 0}/{total} segments{err}"


def run_status(args) -> int:
    from services.store.overview import stack_overview

    queue = _queue(args)
    if args.job:
        record = queue.record(args.job)
        if record is None:
            raise ReelflowError(f"no job {args.job!r} ({EXPIRED})")
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
        f"\n  {m['name']} (weights {m['weights']}): {m['replicas']} replica(s)"
        f"{' on ' + m['runtime'] if m.get('runtime') else ''}{' (' + m['runtime_note'] + ')' if m.get('runtime_note') else ''}"
        for m in overview["models"]))
    print(f"workers  {len(workers)}" + "".join(
        f"\n  {w['name']} ({w['pipeline']}, {w['pending']} job(s) held{_outages(w)})" for w in workers))
    print(f"dlq      {overview['dead_letters']}" + (f" (sinks: {overview['sink_dead_letters']} batches, "
                                                       "`reelflow dlq list --sinks`)" if overview["sink_dead_letters"]
                                                       else ""))
    print(f"sinks    {len(overview['sinks'])}" + "".join(f"\n  {_sink_line(s)}" for s in overview["sinks"]))
    index = overview["index"]
    print(f"index    {index['indexed']} segments indexed, {index['waiting']} waiting, {index['dropped']} skipped "
          "(backlog full)" + (f"; failing: {index['last_error']}" if index["last_error"] else "") +
          " (`reelflow search`)")
    return 0


def _sink_line(sink: dict) -> str:
    line = (f"{sink['url']}{' (global)' if sink['global'] else ''}: {sink['delivered']} delivered, "
            f"{sink['backlog']} waiting, {sink['dead_lettered']} dead-lettered, {sink['dropped']} dropped")
    if sink["retrying_since"]:
        line += f"; failing for {time.time() - sink['retrying_since']:.0f} s: {sink['last_error']}"
    elif sink["last_error"]:
        line += f"; last error: {sink['last_error']}"
    return line


def _outages(worker: dict) -> str:
    count = worker.get("redis_outages") or 0
    if not count:
        return ""
    return f", lost Redis {count} time(s), the last for {worker.get('last_redis_outage_s')} s"


def run_results(args) -> int:
    from services.store.results import follow_job

    if args.output:
        check_output(args.output, args.overwrite)  # before asking the stack
    queue = _queue(args)
    if queue.record(args.job) is None:
        raise ReelflowError(f"no job {args.job!r} ({EXPIRED})")
    segments = follow_job(queue, args.job) if args.follow else queue.segments(args.job)
    if not args.output:
        SegmentWriter(sys.stdout, args.format, job_id=args.job).write_all(segments)
        return 0
    with output_file(args.output, overwrite=args.overwrite) as out:
        count = SegmentWriter(out, args.format, job_id=args.job).write_all(segments)
    print(f"wrote {args.output} ({count} segments)", file=sys.stderr)
    return 0


def run_cancel(args) -> int:
    state = _queue(args).cancel(args.job)
    if state is None:
        raise ReelflowError(f"no job {args.job!r}")
    print(f"{args.job}  {state.value}")
    return 0


def run_dlq(args) -> int:
    queue = _queue(args)
    if args.sinks:
        return _sink_dlq(queue, args)
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


def _sink_dlq(queue: JobQueue, args) -> int:
    outboxes = queue.outboxes
    if args.action == "replay":
        if not args.job:
            raise ReelflowError("dlq replay --sinks needs a batch id: reelflow dlq replay --sinks ID (from dlq list --sinks)")
        count = outboxes.replay(args.job)
        if count is None:
            raise ReelflowError(f"no batch {args.job!r} in the sinks' dead-letter list (`reelflow dlq list --sinks`)")
        print(f"{args.job}  {count} message(s) queued again for their sink")
        return 0
    entries = outboxes.dead_letters()
    for e in entries:
        if args.json:
            print(json.dumps(e))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
            print(f"{e['id']}  {when}  {e['url']}  {len(e['messages'])} message(s)  {e['reason']}")
    if not entries and not args.json:
        print("the sinks' dead-letter list is empty")
    return 0
