"""`reelflow up` (the whole stack, until stopped) and `reelflow process` (up + submit + wait + export,
for one-shot bulk work).

Redis: `REELFLOW_REDIS_URL`, or the embedded redis-server under the home (started, or reused if
running). Work: a worker (`services.worker.runtime.Runtime`) in this process, on the Ray pipeline —
`RAY_ADDRESS`'s cluster or a local one, from `services.ray_backend.start_pipeline` — or, with
`--no-ray`, on the data plane in this process. Stopping `up` (Ctrl-C, SIGTERM) hands the job in
hand back to the queue after its current batch; its stored segments stay. If the process is killed
instead, the job is reclaimed when its lease runs out.

`process` writes each video's results to its own file in --out (the names: `services.cli.output.
result_names`), refuses to replace files of an earlier run unless --overwrite, prints a summary
table, and exits 0 only if every job is done.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import ReelflowError, one_line
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS, get_spec
from pipelines.models.weight_files import check_weights
from services.cli.jobs import submit_sources, wait_for
from services.cli.options import (add_device_option, add_index_option, add_model_options, add_no_ray_option,
                                  add_overwrite_option, add_runtime_option, add_segment_options, model_arg,
                                  with_runtime)
from services.cli.output import SegmentWriter, output_file, refuse_existing, result_names

if TYPE_CHECKING:  # the worker, Redis and pydantic load in `up` and `process`, not with `--help`
    from services.settings import Settings
    from services.worker.pipeline import Pipeline
    from services.worker.runtime import LocalStack


def add_commands(commands, home) -> None:
    up = commands.add_parser("up", parents=[home], help="run the stack (Redis + worker) until stopped",
                             description="Start the embedded Redis (unless REELFLOW_REDIS_URL is set) and a "
                                         "job worker in this process; Ctrl-C hands the job in hand back and stops.")
    up.add_argument("--model", action="append", type=model_arg, metavar="MODEL",
                    help=f"serve this model from the start (repeatable; default {DEFAULT_MODEL}); others on first use")
    up.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights of the --model models (default kinetics)")
    add_device_option(up)
    add_runtime_option(up)
    up.add_argument("--keep-redis", action="store_true", help="leave the embedded Redis running on exit")
    add_no_ray_option(up)
    up.add_argument("--http-port", type=int, metavar="P",
                    help="serve the HTTP API (/v1, OpenAPI at /openapi.json) on port P; bearer-token auth when "
                         "REELFLOW_API_TOKEN is set")
    up.add_argument("--http-host", metavar="ADDR", help="address the HTTP API listens on "
                    "(default $REELFLOW_API_HOST or 127.0.0.1: this machine only)")
    up.add_argument("--metrics-port", type=int, metavar="P",
                    help="serve Prometheus metrics at http://127.0.0.1:P/metrics (the README lists them)")
    up.set_defaults(run=run_up)

    process = commands.add_parser(
        "process", parents=[home], help="up + submit + wait + export, in one command",
        description="Start the stack, submit the videos, wait, write each video's results to a JSON-lines file of "
                    "its own in --out and print a summary; exit 0 only if every job is done.",
        epilog="Output names: OUT/<video stem>.jsonl; videos that share a stem keep their extension "
               "(clip.mp4.jsonl, clip.avi.jsonl), and those that still share a name get their parent folders in "
               "front (cam1_clip.mp4.jsonl). Files of an earlier run are not replaced without --overwrite.")
    process.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="video files or URLs")
    add_model_options(process)
    process.add_argument("--out", default="reelflow-results", metavar="DIR",
                         help="where the per-video JSON lines go (default ./reelflow-results)")
    add_overwrite_option(process)
    add_segment_options(process)
    add_index_option(process, "the videos' segments")
    add_device_option(process)
    add_runtime_option(process)
    add_no_ray_option(process)
    process.set_defaults(run=run_process)


SINK_DRAIN_S = 30.0  # how long `process` waits for the global sinks to take its results


def pipeline_factory(settings: Settings, no_ray: bool, device: str,
                     http: tuple[str, int] | None = None) -> Callable[[str], Pipeline]:
    """How the stack gets its pipeline: the data plane in this process (`--no-ray`), or the Ray
    backend's one factory (which also serves the HTTP API on Serve's proxy when `http` is given)."""
    def make(redis_url: str) -> Pipeline:
        if no_ray:
            from services.worker.in_process import InProcessPipeline

            return InProcessPipeline(device=device, sources=settings.sources, runtime=settings.runtime,
                                     cache_dir=settings.model_cache_dir)
        from services.ray_backend import start_pipeline  # Ray loads only for the commands that use it

        return start_pipeline(settings, device=device, http=http, redis_url=redis_url)

    return make


def run_up(args) -> int:
    from services.settings import default_allowed_roots, settings_for
    from services.sinks import check_sink_urls
    from services.worker.metrics_endpoint import MetricsEndpoint
    from services.worker.runtime import LocalStack, PipelineLost

    roots = default_allowed_roots(models=args.model or [])
    settings = with_runtime(settings_for(args.home), args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    http = (args.http_host or settings.api_host, args.http_port) if args.http_port else None
    check_sink_urls(settings.sink_urls, settings, connect=True, stack=True)  # REELFLOW_SINKS, before starting anything
    metrics_server = MetricsEndpoint(args.metrics_port) if args.metrics_port else None  # a port in use: said first
    stack = LocalStack(settings, pipeline_factory(settings, args.no_ray, args.device, None if args.no_ray else http))
    if metrics_server is not None:  # the Ray node's too (the pipeline may be made again: asked at each scrape)
        metrics_server.more = lambda: stack.pipeline.metrics_url() if stack.pipeline is not None else None
    try:
        models = args.model or [DEFAULT_MODEL]
        print(f"reelflow up: starting {', '.join(models)} (weights {args.weights}; a model's first start on a "
              "machine converts it for its runtime and times its batch sizes: a minute or more)",
              file=sys.stderr, flush=True)
        for problem in stack.prepare(models, args.weights):
            print(f"reelflow up: warning: {problem}", file=sys.stderr, flush=True)
        served = _served_models(stack)
        for note in filter(None, (m.get("runtime_note") for m in served)):
            print(f"reelflow up: note: {note}", file=sys.stderr, flush=True)
        for m in served:  # a conversion is done once: say when this start did one (and why, if again)
            if (m.get("runtime_origin") or "").startswith("converted"):
                print(f"reelflow up: {m['model']}: {m['runtime_origin']}; kept in "
                      f"{settings.model_cache_dir} (later starts read it)", file=sys.stderr, flush=True)
        if http and args.no_ray:
            from services.api.server import serve_in_thread  # FastAPI and uvicorn load only with --http-port

            serve_in_thread(stack.queue, settings, *http)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stack.stop())
        print(f"reelflow up: {_where(stack)}; {_mode(args.no_ray, settings)}{_runtimes(served)}{_api(http, settings)}"
              f"{_sinks(settings)}"
              f"{_metrics(args.metrics_port)}; local videos "
              f"under {roots} (REELFLOW_ALLOWED_ROOTS); worker {stack.runtime.consumer} ready. Submit with "
              "`reelflow submit VIDEO`; Ctrl-C stops.", file=sys.stderr, flush=True)
        stack.run()
        print("reelflow up: stopping (jobs in progress go back to the queue for the next worker)",
              file=sys.stderr, flush=True)
    except PipelineLost as e:  # its supervisor restarts it; threads stuck in calls to the dead node cannot be joined
        print(f"reelflow: error: {one_line(e, limit=2000)}", file=sys.stderr, flush=True)
        stack.store.close(keep=args.keep_redis)  # the embedded Redis, if this stack started it
        os._exit(1)
    finally:
        stack.close(keep_redis=args.keep_redis)
        if metrics_server is not None:
            metrics_server.shutdown()
    print("reelflow up: stopped", file=sys.stderr, flush=True)
    return 0


def _metrics(port: int | None) -> str:
    return f"; metrics on http://127.0.0.1:{port}/metrics" if port else ""


def _where(stack: LocalStack) -> str:
    from services.store.connection import redact

    url = redact(stack.store.url)
    return f"embedded Redis {url} (home {stack.settings.home})" if stack.store.embedded else f"Redis {url}"


def _mode(no_ray: bool, settings: Settings) -> str:
    if no_ray:
        return "in-process pipeline"
    return f"Ray pipeline ({settings.decoders} decoder(s) x {settings.jobs_per_decoder} jobs)"


def _served_models(stack: LocalStack) -> list[dict]:
    try:
        return stack.pipeline.describe()
    except Exception:  # only the ready line's detail
        return []


def _runtimes(served: list[dict]) -> str:
    """`; x3d_xs on openvino` for the ready line."""
    on = [f"{m['model']} on {m['runtime']}" for m in served if m.get("runtime")]
    return f"; {', '.join(on)}" if on else ""


def _sinks(settings: Settings) -> str:
    from services.store.connection import redact

    if not settings.sink_urls:
        return ""
    return "; results also to " + ", ".join(redact(u) for u in settings.sink_urls)


def _api(http: tuple[str, int] | None, settings: Settings) -> str:
    if not http:
        return ""
    return f"; HTTP API on http://{http[0]}:{http[1]}/v1" + (" (bearer token)" if settings.api_token else "")


def run_process(args) -> int:
    from services.settings import default_allowed_roots, settings_for
    from services.sinks import check_sink_urls
    from services.worker.runtime import LocalStack

    check_weights(get_spec(args.model), args.weights)  # before starting anything: fail in a second
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReelflowError(f"--out {args.out!r} is a file; give a directory (it is made if missing)")
    targets = [out / name for name in result_names(args.sources)]
    refuse_existing(targets, args.overwrite, option="--out")  # before any work, too
    default_allowed_roots(args.sources, [args.model])  # the working directory and the files named here
    settings = with_runtime(settings_for(args.home), args)
    check_sink_urls(settings.sink_urls, settings, connect=True, stack=True)  # REELFLOW_SINKS, before starting anything
    stack = LocalStack(settings, pipeline_factory(settings, args.no_ray, args.device), streams=False)
    try:
        stack.runtime.start()
        submitted, refused = submit_sources(stack.queue, args)
        all_done = wait_for(stack.queue, [s.job_id for s in submitted]) if submitted else True
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for job_id, source, index in submitted:
            record = stack.queue.record(job_id)
            segments = stack.queue.segments(job_id)
            with output_file(targets[index], overwrite=args.overwrite) as f:
                SegmentWriter(f).write_all(segments)
            tops = Counter(s["labels"][0] for s in segments if s["labels"])
            top = tops.most_common(1)[0][0] if tops else ""
            state = record.state.value if record else "expired"
            note = str(targets[index]) if state == "done" else (record.error or "") if record else ""
            rows.append((Path(source).name, state, len(segments), top, note))
        print_summary(rows)
        _drain_sinks(stack, settings)
        return 0 if all_done and not refused else 1
    finally:
        stack.close(keep_redis=not stack.store.started_here)  # a server `up` runs stays up


def _drain_sinks(stack: LocalStack, settings: Settings, timeout_s: float = SINK_DRAIN_S) -> None:
    """Give the global sinks a while to take what this run queued for them; say what is left."""
    if not settings.sink_urls:
        return
    outboxes = stack.queue.outboxes
    ids = outboxes.targets([])
    deadline = time.monotonic() + timeout_s
    while (waiting := sum(outboxes.backlog(sid) for sid in ids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if waiting:
        print(f"reelflow: {waiting} message(s) still wait for the sinks (`reelflow status`); a stack on this "
              "Redis (`reelflow up`) delivers them", file=sys.stderr)


def print_summary(rows: list[tuple[str, str, int, str, str]]) -> None:
    """video, state, segments, most frequent top label, output file (or the error)."""
    if not rows:
        raise ReelflowError("nothing was submitted")
    width = max(len(r[0]) for r in rows)
    label_width = max(len("top label"), *(len(r[3]) for r in rows))
    print(f"\n{'video':<{width}}  {'state':<9} {'segments':>8}  {'top label':<{label_width}}  output")
    for name, state, segments, top, note in rows:
        print(f"{name:<{width}}  {state:<9} {segments:>8}  {top:<{label_width}}  {note}")
    sys.stdout.flush()
