"""`reelflow process`: up + submit + wait + export, in one command, for one-shot bulk work.

Writes `OUT/<video stem>.jsonl` per video (one segment result per line) and prints a summary
table; exits 0 only if every job is done.

    $ reelflow process videos/*.mp4 --out results/ --weights none
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path

from pipelines.errors import ReelflowError
from services.client_commands import submit_sources, wait_for
from services.embedded_redis import EmbeddedRedis
from services.stack import connect, default_allowed_roots, settings_for, start_pipeline


def run_process(args) -> int:
    from pipelines.models import get_spec
    from pipelines.weight_files import check_weights

    check_weights(get_spec(args.model), args.weights)  # before starting anything: fail in a second
    default_allowed_roots(args.sources, [args.model])  # the working directory and the files named here
    settings = settings_for(args.home)
    embedded = None if settings.redis_url else EmbeddedRedis(settings.home)
    if embedded is not None:
        embedded.start()
    queue = connect(settings)
    from services.worker import Worker

    pipeline = start_pipeline(settings, use_ray=not args.no_ray, device=args.device)
    worker = Worker(queue, pipeline)
    thread = threading.Thread(target=worker.run, kwargs={"block_ms": 200}, daemon=True, name="reelflow-worker")
    thread.start()
    try:
        submitted, refused = submit_sources(queue, args)
        all_done = wait_for(queue, [job_id for job_id, _ in submitted]) if submitted else True
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for job_id, source in submitted:
            record = queue.record(job_id)
            segments = queue.segments(job_id)
            target = out / f"{Path(source).stem}.jsonl"
            with open(target, "w") as f:
                for segment in segments:
                    f.write(json.dumps(segment) + "\n")
            tops = Counter(s["labels"][0] for s in segments if s["labels"])
            top = tops.most_common(1)[0][0] if tops else ""
            state = record.state.value if record else "expired"
            note = str(target) if state == "done" else (record.error or "") if record else ""
            rows.append((Path(source).name, state, len(segments), top, note))
        print_summary(rows)
        return 0 if all_done and not refused else 1
    finally:
        worker.stop.set()
        thread.join(timeout=60)
        if hasattr(pipeline, "shutdown"):
            pipeline.shutdown()
        if embedded is not None and embedded.owns_server:  # a server `up` runs stays up
            embedded.stop()


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
