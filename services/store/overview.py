"""Read-only overviews of a running stack, the same for the CLI (`reelflow status`, `streams list`),
the HTTP API (`/v1/status`, `/v1/streams`) and the dashboard.

    >>> stack_overview(queue)["queue"]          # doctest: +SKIP
    {'waiting': 0, 'pending': 1, 'retrying': 0}
"""

from __future__ import annotations

from services.store.index_outbox import IndexOutbox
from services.store.outbox import Outboxes
from services.store.queue import JobQueue
from services.store.streams import StreamRegistry

JOBS_COUNTED = 1000  # the latest jobs `stack_overview` counts by state


def stack_overview(queue: JobQueue) -> dict:
    """Queue depth, jobs by state (the latest 1000), models and their replicas, workers, dead letters."""
    states: dict[str, int] = {}
    for job_id in queue.job_ids(limit=JOBS_COUNTED):
        state = queue.state(job_id)
        if state is not None:
            states[state.value] = states.get(state.value, 0) + 1
    workers = queue.workers()
    return {"queue": queue.depth(), "jobs": states, "models": models_served(workers), "workers": workers,
            "dead_letters": len(queue.dead_letters()), "sinks": queue.outboxes.statuses(),
            "sink_dead_letters": len(queue.outboxes.dead_letters()), "index": IndexOutbox(queue.r).status()}


def models_served(workers: list[dict]) -> list[dict]:
    """Replicas per (model, weights, runtime) over all live workers; workers sharing a Ray cluster
    count once. `runtime` says where its forward passes run, `runtime_note` why not on the runtime asked."""
    seen: set[str] = set()
    models: dict[tuple, dict] = {}
    for worker in workers:
        for m in worker.get("models", []):
            if m["serving"] in seen:
                continue
            seen.add(m["serving"])
            entry = models.setdefault((m["model"], m["weights"], m.get("runtime")),
                                      {"name": m["model"], "weights": m["weights"], "runtime": m.get("runtime"),
                                       "runtime_note": m.get("runtime_note"), "replicas": 0, "workers": []})
            entry["replicas"] += m["replicas"]
            entry["workers"].append(worker["name"])
    return list(models.values())


def stream_rows(registry: StreamRegistry) -> list[dict]:
    """One row per watched stream: who reads it, its state, counters and latency."""
    rows = []
    outboxes = Outboxes(registry.r)
    for name, spec in sorted(registry.specs().items()):
        status = registry.status(name)
        sinks = [outboxes.status(sid) for sid in outboxes.targets(spec.sinks)]
        failing = [s for s in sinks if s["retrying_since"] or (s["last_error"] and not s["last_ok_at"])]
        rows.append({"name": name, "url": spec.url, "model": spec.model, "owner": registry.owner(name),
                     "state": status.get("state", "waiting for a worker") if registry.owner(name) else "unowned",
                     **{k: status.get(k) for k in ("transport", "reconnects", "gaps", "dropped", "drop_reasons", "failed", "unpublished", "segments", "last_index",
                                                   "latency_p50_s", "latency_p95_s", "last_error",
                                                   # decoding: frames decoded and left undecoded (overload)
                                                   "frames", "skipped_frames", "behind", "shed", "shed_share")},
                     "recording": status.get("recording") or None,  # evidence clips (issue 22)
                     "rules": {"record": spec.record, "pre_s": spec.pre_s, "post_s": spec.post_s,
                               "max_clip_s": spec.max_clip_s},
                     "sinks": len(sinks),
                     "sink_error": f"{failing[0]['url']}: {failing[0]['last_error']}" if failing else None})
    return rows
