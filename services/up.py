"""`reelflow up`: the whole stack in one process, until stopped.

Redis: `REELFLOW_REDIS_URL`, or the embedded redis-server under the home (started, or reused if
running). Work: a job consumer running the data plane in this process. Stopping (Ctrl-C, SIGTERM)
hands the job in hand back to the queue after its current batch; its stored segments stay. If the
process is killed instead, the job is reclaimed when its lease runs out.
"""

from __future__ import annotations

import logging
import signal
import sys

from services.embedded_redis import EmbeddedRedis
from services.stack import connect, redact, settings_for


def run_up(args) -> int:
    settings = settings_for(args.home)
    embedded = None if settings.redis_url else EmbeddedRedis(settings.home)
    url = settings.redis_url or embedded.start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from services.worker import InProcessPipeline, Worker

    queue = connect(settings)
    worker = Worker(queue, InProcessPipeline(device=args.device))
    for model in args.model or []:
        worker.pipeline.prepare(model, args.weights)  # load now: bad weights fail before any job
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop.set())
    where = f"embedded Redis {url} (home {settings.home})" if embedded else f"Redis {redact(url)}"
    print(f"reelflow up: {where}; worker {worker.consumer} ready. Submit with `reelflow submit VIDEO`; "
          "Ctrl-C stops.", file=sys.stderr, flush=True)
    try:
        worker.run()
    finally:
        if embedded is not None and not args.keep_redis:
            embedded.stop()
    return 0
