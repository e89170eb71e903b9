"""`reelflow search`: moments like this one, from the vector index of every segment a stack stored.

    $ reelflow search --like clip.mp4 --at 12          # the segment of clip.mp4 at 12 s
    $ reelflow search --like 3f2a9c...:4 --top 20      # segment 4 of a job
    $ reelflow search --like-stream door --since 2h    # what looked like the door camera's latest window
    $ reelflow search --stats                          # what the index holds

A video file is classified here (in a child process, as `reelflow classify` does) with --model and
--weights, which pick the index to search; an indexed segment or window carries its own.
"""

from __future__ import annotations

import json
import os

from services.cli.options import add_json_option, add_model_options, add_runtime_option, positive_float, positive_int


def add_commands(commands, home) -> None:
    search = commands.add_parser(
        "search", parents=[home], help="find moments like this one in every indexed segment",
        description="Search the vector index of the segments a stack stored (jobs and streams, unless submitted "
                    "or watched with --no-index) for those most like a video's segment, an indexed segment or a "
                    "stream's latest window. Matches are grouped by video or stream, best first, with times and "
                    "cosine similarity (1: the same).",
        epilog="examples:\n  reelflow search --like clip.mp4 --at 12\n  reelflow search --like JOB:4 --top 20 "
               "--label abseiling\n  reelflow search --like-stream door --since 2h --json\n  reelflow search --stats",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    what = search.add_mutually_exclusive_group(required=True)
    what.add_argument("--like", metavar="VIDEO|JOB:SEGMENT",
                      help="a video file (classified here; every segment, or the one at --at) or a stored segment")
    what.add_argument("--like-stream", metavar="NAME", help="a stream's latest indexed window")
    what.add_argument("--duplicates-of", metavar="VIDEO",
                      help="indexed videos whose segments match this video's in order (re-encodes, crops, trims), "
                           "with a score and the time offset where it starts in them")
    what.add_argument("--stats", action="store_true", help="the index's tables: model, weights, rows, size")
    search.add_argument("--at", type=float, default=None, metavar="SECONDS",
                        help="with --like VIDEO: the segment covering this time (default: every segment)")
    search.add_argument("--top", type=positive_int, default=10, metavar="K", help="matches to show (default 10)")
    add_model_options(search)
    add_runtime_option(search, "the model that embeds --like VIDEO")
    search.add_argument("--source", metavar="TEXT", help="only videos or stream URLs containing TEXT")
    search.add_argument("--job", metavar="ID", help="only this job's segments")
    search.add_argument("--stream", metavar="NAME", help="only this stream's windows")
    search.add_argument("--label", metavar="LABEL", help="only segments whose top label is LABEL")
    search.add_argument("--since", metavar="WHEN", help="only segments stored since WHEN: 2026-11-30, "
                                                        "2026-11-30T08:00, or an age: 15m, 2h, 7d")
    search.add_argument("--until", metavar="WHEN", help="only segments stored before WHEN")
    search.add_argument("--min-similarity", type=positive_float, default=None, metavar="S",
                        help="leave out matches below this cosine similarity (e.g. 0.8); with --duplicates-of, "
                             "videos scoring below it (default 0.8)")
    search.add_argument("--thumbnails", action="store_true",
                        help="with --json: a JPEG (data: URI) per match whose video is readable here")
    add_json_option(search, "one JSON object: the query and its matches grouped by source")
    search.set_defaults(run=run_search)


def run_search(args) -> int:
    # numpy and LanceDB load here, not with `reelflow --help`
    from services.index.search import SearchError, answer, filters, like_segment, like_stream
    from services.index.vectors import VectorIndex
    from services.settings import settings_for

    settings = settings_for(args.home)
    index = VectorIndex(settings.index_location)
    if args.stats:
        return _print_stats(index, args.json)
    if args.at is not None and (args.like is None or _is_segment_ref(args.like)):
        raise SearchError("--at goes with --like VIDEO (a time in that video)")
    where = filters(args.source, args.job, args.stream, args.label, args.since, args.until)
    if args.duplicates_of:
        return _print_duplicates(index, _like_video(args, args.duplicates_of), where, args)
    if args.like_stream:
        query = like_stream(index, args.like_stream)
    elif _is_segment_ref(args.like):
        query = like_segment(index, args.like)
    else:
        query = _like_video(args)
    result = answer(index, query, args.top, where, args.min_similarity, args.thumbnails)
    if args.json:
        print(json.dumps(result))
        return 0
    groups = result["groups"]
    print(f"like {query.what}  model {query.model}  weights {query.weights}" + (f"  where {where}" if where else ""))
    if not groups:
        print("no match (an empty index for this model and weights, or filters that leave nothing)")
    for group in groups:
        name = f"stream {group['stream']}" if group["kind"] == "stream" else f"{group['source']}  job {group['job']}"
        print(f"{name}  ({len(group['matches'])} match{'es' if len(group['matches']) > 1 else ''})")
        for m in group["matches"]:
            print(f"    {m['start_s']:8.2f}-{m['end_s']:<8.2f} segment {m['segment']:<5} similarity "
                  f"{m['similarity']:.4f}  {m['label']} ({m['score']:.3f})")
    return 0


def _is_segment_ref(text: str) -> bool:
    head, _, tail = text.rpartition(":")
    return bool(head) and tail.isdigit() and not os.path.exists(text) and "/" not in head


def _like_video(args, path: str | None = None):
    """The video's segments with embeddings (services.index.embed: `reelflow classify` in a child process)."""
    from services.index.embed import embed_video

    if path is not None:
        return embed_video(path, args.model, args.weights, runtime=args.runtime, flag="--duplicates-of")
    return embed_video(args.like, args.model, args.weights, at=args.at, runtime=args.runtime)


def _print_duplicates(index, query, where, args) -> int:
    from services.index.search import duplicates

    minimum = 0.8 if args.min_similarity is None else args.min_similarity
    found = duplicates(index, query, where, min_score=minimum)[:args.top]
    if args.json:
        print(json.dumps({"query": {"what": query.what, "model": query.model, "weights": query.weights},
                          "filter": where, "min_score": minimum, "duplicates": found}))
        return 0
    print(f"duplicates of {query.what}  model {query.model}  weights {query.weights}")
    if not found:
        print(f"none scoring {minimum} or more (--min-similarity lowers the bar)")
    for d in found:
        name = f"stream {d['stream']}" if d["kind"] == "stream" else f"{d['source']}  job {d['job']}"
        print(f"  {d['score']:.4f}  {name}  starts at {d['offset_s']:+.2f} s in it, {d['matched_segments']}/"
              f"{d['query_segments']} segments in order")
    return 0


def _print_stats(index, as_json: bool) -> int:
    tables = index.stats()
    if as_json:
        print(json.dumps({"uri": index.uri, "tables": tables}))
        return 0
    print(f"vector index at {index.uri}")
    if not tables:
        print("empty: nothing indexed yet (jobs and streams are indexed as a stack stores them)")
    for t in tables:
        size = f"{t['bytes'] / 2**20:.1f} MiB" if t["bytes"] is not None else "?"
        print(f"  {t['model']}  weights {t['weights']}: {t['rows']} segments ({t['indexed_rows']} in the ANN "
              f"index), {size}")
    return 0
