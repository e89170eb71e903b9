"""`reelflow up`: the whole stack, until stopped.

Redis: `REELFLOW_REDIS_URL`, or the embedded redis-server under the home (started, or reused if
running). Ray: `RAY_ADDRESS`'s cluster, or a local one. Work: a job consumer in this process that
drives Ray decoder actors and Serve model replicas (`--no-ray`: the data plane runs in this process
instead). Stopping (Ctrl-C, SIGTERM)
hands the job in hand back to the queue after its current batch; its stored segments stay. If the
process is killed instead, the job is reclaimed when its lease runs out.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from pipelines.errors import ReelflowError
from pipelines.models import DEFAULT_MODEL
from services.embedded_redis import EmbeddedRedis
from services.stack import connect, default_allowed_roots, redact, settings_for, start_pipeline


def run_up(args) -> int:
    roots = default_allowed_roots(models=args.model or [])
    settings = settings_for(args.home)
    embedded = None if settings.redis_url else EmbeddedRedis(settings.home)
    url = settings.redis_url or embedded.start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    pipeline = streams = None
    try:
        from services.worker import Worker

        queue = connect(settings)
        # Ray processes started from here (Serve's controller: the backlog autoscaler; the API) find Redis too
        os.environ["REELFLOW_REDIS_URL"] = url
        http = (args.http_host or settings.api_host, args.http_port) if args.http_port else None
        pipeline = start_pipeline(settings, use_ray=not args.no_ray, device=args.device, http=http)
        worker = Worker(queue, pipeline)
        for model in args.model or [DEFAULT_MODEL]:
            try:  # load now, so the first job does not wait for it
                pipeline.prepare(model, args.weights)
            except ReelflowError as e:
                print(f"reelflow up: warning: {e}", file=sys.stderr, flush=True)
        if http:
            serve_http(pipeline, queue, settings, url, http)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: worker.stop.set())
        where = f"embedded Redis {redact(url)} (home {settings.home})" if embedded else f"Redis {redact(url)}"
        mode = ("in-process pipeline" if args.no_ray
                else f"Ray pipeline ({settings.decoders} decoder(s) x {settings.jobs_per_decoder} jobs)")
        api = (f"; HTTP API on http://{http[0]}:{http[1]}/v1" + (" (bearer token)" if settings.api_token else "")
               if http else "")
        print(f"reelflow up: {where}; {mode}{api}; local videos under {roots} (REELFLOW_ALLOWED_ROOTS); "
              f"worker {worker.consumer} ready. Submit with "
              "`reelflow submit VIDEO`; Ctrl-C stops.", file=sys.stderr, flush=True)
        from services.stream_manager import StreamManager
        from services.stream_registry import StreamRegistry

        streams = StreamManager(StreamRegistry(queue.r), worker.consumer, pipeline, url, settings.max_streams).start()
        worker.run()
    finally:
        if streams is not None:
            streams.close()
        if hasattr(pipeline, "shutdown"):
            pipeline.shutdown()
        if embedded is not None and not args.keep_redis:
            embedded.stop()
    return 0


def serve_http(pipeline, queue, settings, url: str, http: tuple[str, int]) -> None:
    """The HTTP API: on Serve's proxy (Ray), or on a uvicorn thread of this process (--no-ray)."""
    if hasattr(pipeline, "serve_api"):
        pipeline.serve_api(url, http)
        return
    import uvicorn

    from services.api import api, configure

    configure(queue, settings)
    server = uvicorn.Server(uvicorn.Config(api, host=http[0], port=http[1], log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="reelflow-http").start()
