"""`reelflow watch / tail / streams`: register live streams, follow their results, list and stop them.

Clients of a running stack (`reelflow up` reads the streams); they import neither torch nor PyAV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from pipelines.errors import ReelflowError, one_line
from services.cli.options import (add_index_option, add_json_option, add_model_options, add_segment_options,
                                  add_sink_option, positive_int)

if TYPE_CHECKING:  # Redis and pydantic load in the commands, not with `--help`
    from services.store.streams import StreamRegistry


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
    add_recording_options(watch)
    watch.set_defaults(run=run_watch)

    tail = commands.add_parser("tail", parents=[home], help="follow a stream's results as they come")
    tail.add_argument("name", metavar="NAME")
    add_json_option(tail, "JSON lines: index, start_s, end_s, labels, scores, captured_at, published_at, smoothed")
    tail.add_argument("--from-start", action="store_true", help="print the kept results first, then follow")
    tail.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N results")
    tail.add_argument("--events", action="store_true",
                      help="print the stream's label events (enter/exit of the smoothed top label) kept so far")
    tail.set_defaults(run=run_tail)

    listing = commands.add_parser("streams", parents=[home], help="list the watched streams, stop one, or change "
                                                                  "what it records",
                                  description="`streams list`: state, reconnects, dropped clips, segments, latency, "
                                              "evidence clips. `streams stop NAME`: stop watching (results are kept). "
                                              "`streams record NAME --record LABEL,... [--pre S] [--post S]`: change "
                                              "its recording rules while it runs (`--record none`: record nothing).",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    listing.add_argument("action", nargs="?", choices=["list", "stop", "record"], default="list")
    listing.add_argument("name", nargs="?", metavar="NAME", help="with stop or record: the stream")
    add_recording_options(listing, default=None)
    add_json_option(listing)
    listing.set_defaults(run=run_streams)


def add_recording_options(parser, default: str | None = "") -> None:
    """Evidence clips: which label events record one, and how much before and after."""
    parser.add_argument("--record", metavar="LABEL[,LABEL...]", default=default,
                        help="record a clip (from --pre seconds before the label's enter event to --post after) "
                             "when one of these labels enters; `all`: every enter event; `none`: nothing"
                             + (" (default: nothing)" if default == "" else ""))
    parser.add_argument("--pre", type=float, default=None, metavar="SECONDS", help="seconds before the event (default 5)")
    parser.add_argument("--post", type=float, default=None, metavar="SECONDS", help="seconds after it (default 5)")
    parser.add_argument("--max-clip", type=float, default=None, metavar="SECONDS",
                        help="longest clip: enter events during a clip extend it up to this (default 60)")


def _record_labels(text: str | None) -> list[str]:
    if not text or text.strip().lower() == "none":
        return []
    return ["*"] if text.strip().lower() == "all" else [label.strip() for label in text.split(",") if label.strip()]


def _registry(args) -> tuple[StreamRegistry, object]:
    from services.settings import settings_for
    from services.store.connection import connect

    settings = settings_for(args.home)
    return connect(settings).stream_registry(), settings


def run_watch(args) -> int:
    from pydantic import ValidationError

    from services.sinks import check_sink_urls
    from services.store.streams import StreamSpec

    registry, settings = _registry(args)
    url = args.url
    if "://" not in url and not url.startswith("/dev/"):
        url = os.path.abspath(url)  # a file played live: the worker may run elsewhere
    settings.sources.for_streams().check(url)
    check_sink_urls(args.sinks, settings, connect=True)
    try:
        spec = StreamSpec(name=args.name, url=url, model=args.model, weights=args.weights, stride_s=args.stride,
                          transport=args.transport, topk=args.topk, smoothing=args.smoothing,
                          enter=args.enter, exit=args.exit, sinks=args.sinks, index=not args.no_index,
                          record=_record_labels(args.record),
                          **{k: v for k, v in (("pre_s", args.pre), ("post_s", args.post),
                                               ("max_clip_s", args.max_clip)) if v is not None})
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
    from services.store.overview import stream_rows

    registry, _ = _registry(args)
    if args.action == "record":
        return _set_recording(registry, args)
    if args.record is not None or args.pre is not None or args.post is not None or args.max_clip is not None:
        raise ReelflowError("--record, --pre, --post and --max-clip go with `streams record NAME` (or `watch`)")
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
              + (f"  [sink failing: {row['sink_error']}]" if row.get("sink_error") else "")
              + _recording_line(row.get("recording") or {}))
    return 0


def _recording_line(rec: dict) -> str:
    """What `streams list` says of a stream's evidence clips."""
    if not rec:
        return ""
    rules = "every label" if rec["record"] == ["*"] else ", ".join(rec["record"]) or "nothing"
    line = (f"\n    records {rules} ({rec['pre_s']:g} s before, {rec['post_s']:g} after; {rec['mode'] or '-'}, "
            f"buffer {rec['ring_bytes'] / 2**20:.1f} MiB): {rec['clips_ready']} clips, {rec['clips_failed']} failed")
    if rec.get("mode_note"):
        line += f"; {rec['mode_note']}"
    last = rec.get("last_clip")
    if last:
        line += f"; last {last['state']}: {last['path']}" + (f" ({last['reason']})" if last.get("reason") else "")
    if rec.get("rule_error"):
        line += f"\n    {rec['rule_error']}"
    return line


def _set_recording(registry: StreamRegistry, args) -> int:
    from pydantic import ValidationError

    if not args.name:
        raise ReelflowError("which stream? `reelflow streams record NAME --record LABEL,...`")
    spec = registry.spec(args.name)
    if spec is None:
        raise ReelflowError(f"no stream named {args.name!r} is watched; `reelflow streams list` shows them")
    record = spec.record if args.record is None else _record_labels(args.record)
    try:
        spec = registry.set_recording(args.name, record, spec.pre_s if args.pre is None else args.pre,
                                      spec.post_s if args.post is None else args.post,
                                      spec.max_clip_s if args.max_clip is None else args.max_clip)
    except ValidationError as e:
        raise ReelflowError(one_line(e)) from None
    if spec is None:
        raise ReelflowError(f"stream {args.name!r} was stopped meanwhile")
    what = "nothing" if not spec.record else "every label" if spec.record == ["*"] else ", ".join(spec.record)
    print(f"{spec.name} records {what} ({spec.pre_s:g} s before, {spec.post_s:g} s after, at most "
          f"{spec.max_clip_s:g} s); its worker applies this within 10 s")
    return 0

