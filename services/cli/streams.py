"""`reelflow watch / tail / streams`: register live streams, follow their results, list and stop them.

Clients of a running stack (`reelflow up` reads the streams); they import neither torch nor PyAV.
"""

from __future__ import annotations

import json
import os
import sys

from pydantic import ValidationError

from pipelines.errors import ReelflowError, one_line
from services.cli.options import (add_index_option, add_json_option, add_model_options, add_segment_options,
                                  add_sink_option, positive_int)
from services.settings import settings_for
from services.sinks import check_sink_urls
from services.store.connection import connect
from services.store.overview import stream_rows
from services.store.streams import StreamRegistry, StreamSpec


def add_commands(commands, home) -> None:
    watch = commands.add_parser("watch", parents=[home], help="classify a live stream continuously on a running stack",
                                description="Register a live source; a worker of the stack reads it, reconnecting "
                                            "when it drops, and publishes a result per window. Follow it with "
                                            "`reelflow tail NAME`.",
                                epilog="URL: rtsp:// or rtsps:// (--transport auto|tcp|udp), http(s):// live (HLS, "
                                       "MPEG-TS, MJPEG), udp:// or rtp://, or a local file played in real time "
                                       "and looped (demos, tests).")
    watch.add_argument("url", metavar="URL")
    watch.add_argument("--name", required=True, help="the stream's name (letters, digits, . _ -)")
    add_model_options(watch)
    add_segment_options(watch, embeddings=False)
    add_index_option(watch, "its windows")
    add_sink_option(watch, "its windows and label events")
    watch.add_argument("--transport", choices=["auto", "tcp", "udp"], default="auto",
                       help="RTSP transport: auto (default) tries TCP, then UDP, and keeps the one that works; "
                            "`streams list` says which")
    watch.add_argument("--smoothing", type=positive_int, default=3, metavar="K",
                       help="moving average of scores over the last K segments (default 3)")
    watch.add_argument("--enter", type=float, default=0.5, help="smoothed score at which a label starts (default 0.5)")
    watch.add_argument("--exit", type=float, default=0.3, help="smoothed score below which it ends (default 0.3)")
    watch.set_defaults(run=run_watch)

    tail = commands.add_parser("tail", parents=[home], help="follow a stream's results as they come")
    tail.add_argument("name", metavar="NAME")
    add_json_option(tail, "JSON lines: index, start_s, end_s, labels, scores, captured_at, published_at, smoothed")
    tail.add_argument("--from-start", action="store_true", help="print the kept results first, then follow")
    tail.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N results")
    tail.add_argument("--events", action="store_true",
                      help="print the stream's label events (enter/exit of the smoothed top label) kept so far")
    tail.set_defaults(run=run_tail)

    listing = commands.add_parser("streams", parents=[home], help="list the watched streams, or stop one",
                                  description="`streams list`: state, reconnects, dropped clips, segments, latency. "
                                              "`streams stop NAME`: stop watching (results are kept).")
    listing.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    listing.add_argument("name", nargs="?", metavar="NAME", help="with stop: the stream to stop")
    add_json_option(listing)
    listing.set_defaults(run=run_streams)


def _registry(args) -> tuple[StreamRegistry, object]:
    settings = settings_for(args.home)
    return connect(settings).stream_registry(), settings


def run_watch(args) -> int:
    registry, settings = _registry(args)
    url = args.url
    if "://" not in url and not url.startswith("/dev/"):
        url = os.path.abspath(url)  # a file played live: the worker may run elsewhere
    settings.sources.for_streams().check(url)
    check_sink_urls(args.sinks, settings, connect=True)
    try:
        spec = StreamSpec(name=args.name, url=url, model=args.model, weights=args.weights, stride_s=args.stride,
                          transport=args.transport, topk=args.topk, smoothing=args.smoothing,
                          enter=args.enter, exit=args.exit, sinks=args.sinks, index=not args.no_index)
    except ValidationError as e:
        raise ReelflowError(one_line(e)) from None
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
              + (f" (over {row['transport'].upper()})" if row.get("transport") else "")
              + (f"  ({row['last_error']})" if row["last_error"] and row["state"] != "live" else "")
              + (f"  [sink failing: {row['sink_error']}]" if row.get("sink_error") else ""))
    return 0

