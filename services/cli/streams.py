"""`reelflow watch / tail / streams`: register live streams, follow their results, list and stop them.

Clients of a running stack (`reelflow up` reads the streams); they import neither torch nor PyAV.
"""

from __future__ import annotations

import json
import os
import sys

from pydantic import ValidationError

from pipelines.errors import ReelflowError
from services.stack import connect, settings_for
from services.stream_registry import StreamRegistry, StreamSpec


def _registry(args) -> tuple[StreamRegistry, object]:
    settings = settings_for(args.home)
    return StreamRegistry(connect(settings).r), settings


def run_watch(args) -> int:
    registry, settings = _registry(args)
    url = args.url
    if "://" not in url and not url.startswith("/dev/"):
        url = os.path.abspath(url)  # a file played live: the worker may run elsewhere
    settings.sources.for_streams().check(url)
    try:
        spec = StreamSpec(name=args.name, url=url, model=args.model, weights=args.weights, stride_s=args.stride,
                          transport=args.transport, topk=args.topk, smoothing=args.smoothing,
                          enter=args.enter, exit=args.exit)
    except ValidationError as e:
        raise ReelflowError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    if not registry.register(spec):
        raise ReelflowError(f"a stream named {spec.name!r} is already watched; stop it first "
                            f"(reelflow streams stop {spec.name}) or pick another name")
    print(f"watching {spec.name}: {url} with {spec.model} (weights {spec.weights}); "
          f"follow it with `reelflow tail {spec.name}`", file=sys.stderr)
    return 0


def run_tail(args) -> int:
    """Print the stream's segments as they are published, until Ctrl-C (or --count of them)."""
    registry, _ = _registry(args)
    if registry.spec(args.name) is None and not registry.results(args.name, count=1):
        raise ReelflowError(f"no stream named {args.name!r}; `reelflow streams list` shows them")
    if args.events:
        for event in registry.events(args.name):
            print(json.dumps(event) if args.json else
                  f"{args.name} #{event['index']:<5} {event['event']:<5} {event['label']} ({event['score']:.2f})")
        return 0
    after = "0-0" if args.from_start else registry.last_result_id(args.name)
    printed = 0
    while args.count is None or printed < args.count:
        for entry_id, result in registry.results(args.name, after=after, block_ms=1000):
            after = entry_id
            printed += 1
            print(json.dumps(result) if args.json else _line(result), flush=True)
            if args.count is not None and printed >= args.count:
                break
    return 0


def _line(result: dict) -> str:
    latency = result["published_at"] - result["captured_at"]
    labels = ", ".join(f"{label} {score:.2f}" for label, score in zip(result["labels"][:3], result["scores"][:3]))
    return (f"{result['stream']} #{result['index']:<5} {result['start_s']:9.2f}-{result['end_s']:<9.2f} "
            f"{labels}  ({latency * 1000:.0f} ms)")


def stream_rows(registry: StreamRegistry) -> list[dict]:
    """One row per watched stream: who reads it, its state, counters and latency."""
    rows = []
    for name, spec in sorted(registry.specs().items()):
        status = registry.status(name)
        rows.append({"name": name, "url": spec.url, "model": spec.model, "owner": registry.owner(name),
                     "state": status.get("state", "waiting for a worker") if registry.owner(name) else "unowned",
                     **{k: status.get(k) for k in ("reconnects", "gaps", "dropped", "failed", "segments", "last_index",
                                                   "latency_p50_s", "latency_p95_s", "last_error")}})
    return rows


def run_streams(args) -> int:
    registry, _ = _registry(args)
    if args.action == "stop":
        if not args.name:
            raise ReelflowError("which stream? `reelflow streams stop NAME`")
        if not registry.stop(args.name):
            raise ReelflowError(f"no stream named {args.name!r} is watched")
        print(f"stopped {args.name}; its results stay readable with `reelflow tail {args.name} --from-start`")
        return 0
    rows = stream_rows(registry)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no streams; add one with `reelflow watch URL --name NAME`")
    for row in rows:
        p95 = f"{row['latency_p95_s'] * 1000:.0f} ms" if row["latency_p95_s"] is not None else "-"
        print(f"{row['name']:<16} {row['state']:<10} segments {row['segments'] or 0:<6} reconnects "
              f"{row['reconnects'] or 0:<3} dropped {row['dropped'] or 0:<4} p95 {p95:<8} {row['url']}"
              + (f"  ({row['last_error']})" if row["last_error"] and row["state"] != "live" else ""))
    return 0

