"""Queries of the vector index: what to look for (a video's segment, an indexed segment, a stream's
latest window) and where (filters), the matches grouped by source.

    >>> query = like_segment(index, "3f2a...:12")                        # doctest: +SKIP
    >>> groups = group_by_source(index.search(query.model, query.weights, query.vector, 10))
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from pipelines.errors import ReelflowError
from services.index.vectors import Match, VectorIndex, quote


class SearchError(ReelflowError):
    """A query reelflow cannot answer: one line naming the problem and the fix."""


class NotInIndex(SearchError):
    """The segment or stream to search like is not in the index (the API's 404)."""


@dataclass
class Query:
    """Vectors to look for, all of one (model, weights); `what` says where they came from."""

    model: str
    weights: str
    vectors: list[np.ndarray]
    what: str
    times: list[tuple[float, float]] = field(default_factory=list)  # each vector's segment, in the query video


def like_segment(index: VectorIndex, ref: str) -> Query:
    """`JOB:SEGMENT`: an indexed segment of a job."""
    job, _, segment = ref.rpartition(":")
    if not job or not segment.isdigit():
        raise SearchError(f"--like {ref!r} is not JOB:SEGMENT (a job id, a colon, a segment number); for a video "
                          "file, pass its path")
    found = index.find(f"id = {quote(f'job:{job}:{int(segment)}')}", vectors=True)
    if not found:
        raise NotInIndex(f"segment {segment} of job {job} is not in the index (an unknown job, a segment it does "
                          "not have, a job submitted with --no-index, or not indexed yet); check `reelflow results "
                          f"{job}`")
    model, weights, row = found[0]
    return Query(model, weights, [np.asarray(row["vector"], np.float32)], f"segment {segment} of job {job}",
                 [(row["start_s"], row["end_s"])])


def like_stream(index: VectorIndex, name: str) -> Query:
    """A stream's latest indexed window."""
    found = index.values(["id", "segment"], f"kind = 'stream' AND stream = {quote(name)}")
    if not found:
        raise NotInIndex(f"stream {name!r} has no window in the index (an unknown stream, one watched with "
                          "--no-index, or none indexed yet); check `reelflow streams list`")
    latest = max(found, key=lambda row: row["segment"])
    model, weights, row = index.find(f"id = {quote(latest['id'])}", vectors=True)[0]
    return Query(model, weights, [np.asarray(row["vector"], np.float32)],
                 f"the latest window of stream {name} ({row['segment']})", [(row["start_s"], row["end_s"])])


def like_video(segments: list[dict], model: str, weights: str, path: str, at: float | None) -> Query:
    """A video classified in this process (`segments`: its results with embeddings): the segment
    covering `at` seconds, or every segment."""
    if not segments:
        raise SearchError(f"{path} gave no segment to search with; is it shorter than one clip?")
    if at is not None:
        covering = [s for s in segments if s["start_s"] <= at < s["end_s"]]
        if not covering:
            end = max(s["end_s"] for s in segments)
            raise SearchError(f"--at {at:g} is outside {path} (its segments cover 0-{end:g} s)")
        segments = [min(covering, key=lambda s: abs((s["start_s"] + s["end_s"]) / 2 - at))]
    vectors = [np.asarray(s["embedding"], np.float32) for s in segments]
    what = f"{path} at {at:g} s" if at is not None else f"{path} ({len(segments)} segments)"
    return Query(model, weights, vectors, what, [(s["start_s"], s["end_s"]) for s in segments])


def filters(source: str | None = None, job: str | None = None, stream: str | None = None, label: str | None = None,
            since: str | None = None, until: str | None = None) -> str | None:
    """A Lance predicate from the CLI's and the API's filters (None: no filter)."""
    parts = []
    if source:
        parts.append(f"source LIKE {quote('%' + source.replace('%', '') + '%')}")
    if job:
        parts.append(f"job = {quote(job)}")
    if stream:
        parts.append(f"stream = {quote(stream)}")
    if label:
        parts.append(f"label = {quote(label)}")
    if since:
        parts.append(f"at >= {parse_when(since, 'since')}")
    if until:
        parts.append(f"at < {parse_when(until, 'until')}")
    return " AND ".join(parts) or None


def parse_when(text: str, name: str) -> float:
    """`2026-11-30`, `2026-11-30T08:00`, or an age: `90s`, `15m`, `2h`, `7d` ago."""
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip()):
        return time.time() - float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise SearchError(f"--{name} {text!r} is not a time; use a date (2026-11-30), a date and time "
                          "(2026-11-30T08:00) or an age (15m, 2h, 7d)") from None


def run(index: VectorIndex, query: Query, top: int, where: str | None) -> list[Match]:
    """The `top` best matches of the query's vectors (a row matched by several: its best)."""
    require_table(index, query)
    best: dict[str, Match] = {}
    for vector in query.vectors:
        for match in index.search(query.model, query.weights, vector, top, where):
            if match.row["id"] not in best or match.similarity > best[match.row["id"]].similarity:
                best[match.row["id"]] = match
    return sorted(best.values(), key=lambda m: -m.similarity)[:top]


def require_table(index: VectorIndex, query: Query) -> None:
    """NotInIndex, naming what is indexed, when nothing is for the query's model and weights."""
    if not index.has(query.model, query.weights):
        held = ", ".join(f"{t['model']} with weights {t['weights']}" for t in index.stats()) or "nothing yet"
        raise NotInIndex(f"nothing is indexed for {query.model} with weights {query.weights} (indexed: {held}); "
                         "pick those with --model and --weights")


def group_by_source(matches: list[Match]) -> list[dict]:
    """Matches grouped by their video or stream, the best group first, times in order within one."""
    groups: dict[tuple, dict] = {}
    for m in matches:
        key = (m.row["kind"], m.row["stream"] or m.row["source"], m.row["job"])
        group = groups.setdefault(key, {"kind": m.row["kind"], "source": m.row["source"], "job": m.row["job"],
                                        "stream": m.row["stream"], "best": m.similarity, "matches": []})
        group["best"] = max(group["best"], m.similarity)
        group["matches"].append(m.to_dict())
    for group in groups.values():
        group["matches"].sort(key=lambda r: r["start_s"])
    return sorted(groups.values(), key=lambda g: -g["best"])


def answer(index: VectorIndex, query: Query, top: int, where: str | None, min_similarity: float | None = None,
           with_thumbnails: bool = False) -> dict:
    """The JSON the CLI (`--json`) and the API give: the query, the filter, the matches by source."""
    matches = run(index, query, top, where)
    if min_similarity is not None:
        matches = [m for m in matches if m.similarity >= min_similarity]
    groups = group_by_source(matches)
    if with_thumbnails:
        add_thumbnails(groups)
    return {"query": {"what": query.what, "model": query.model, "weights": query.weights,
                      "segments": [list(t) for t in query.times]}, "filter": where, "groups": groups}


def add_thumbnails(groups: list[dict]) -> None:
    """A JPEG data URI (`thumbnail`) on each match whose video this process can read."""
    matches = [m for group in groups for m in group["matches"]]
    pictures = thumbnails_by_id(matches)
    for match in matches:
        if match["id"] in pictures:
            match["thumbnail"] = pictures[match["id"]]


def thumbnails_by_id(rows: list[dict]) -> dict[str, str]:
    """id -> a JPEG data URI of the row's segment, for the rows whose video this process can read
    (none for streams, URLs, moved files); one pass over each video."""
    from pipelines.errors import VideoError
    from pipelines.thumbnails import thumbnails  # PyAV

    by_source: dict[str, list[dict]] = {}
    for row in rows:
        if row["kind"] == "job" and os.path.isfile(row["source"]):
            by_source.setdefault(row["source"], []).append(row)
    pictures = {}
    for source, of_source in by_source.items():
        try:
            uris = thumbnails(source, [(r["start_s"] + r["end_s"]) / 2 for r in of_source])
        except VideoError:
            continue
        pictures.update({r["id"]: uri for r, uri in zip(of_source, uris)})
    return pictures


def duplicates(index: VectorIndex, query: Query, where: str | None = None, per_segment: int = 20,
               min_score: float = 0.0) -> list[dict]:
    """Indexed videos (and streams) whose segments match the query video's in order: re-encodes,
    crops, trims. For each candidate, the time offset most matching pairs agree on (the query's
    start in the candidate, seconds), and a score: the mean, over the query's segments, of the best
    similarity of a match at that offset (0 where none), so a partial copy scores its share."""
    if not query.vectors:
        return []
    require_table(index, query)
    starts = [t[0] for t in query.times]
    step = min((b - a for a, b in zip(starts, starts[1:]) if b > a), default=query.times[0][1] - query.times[0][0])
    tolerance = max(0.25, step / 2)
    pairs: dict[tuple, list[tuple[int, Match]]] = {}
    for i, vector in enumerate(query.vectors):
        for m in index.search(query.model, query.weights, vector, per_segment, where):
            pairs.setdefault((m.row["kind"], m.row["job"] or m.row["stream"]), []).append((i, m))
    found = []
    for (kind, _), matched in pairs.items():
        offsets = [m.row["start_s"] - starts[i] for i, m in matched]
        offset = max(offsets, key=lambda o: sum(m.similarity for (_, m), x in zip(matched, offsets)
                                                  if abs(x - o) <= tolerance))
        best: dict[int, Match] = {}
        for (i, m), x in zip(matched, offsets):
            if abs(x - offset) <= tolerance and (i not in best or m.similarity > best[i].similarity):
                best[i] = m
        score = sum(m.similarity for m in best.values()) / len(query.vectors)
        if score < min_score:
            continue
        rows = [best[i].row for i in sorted(best)]
        found.append({"kind": kind, "source": rows[0]["source"], "job": rows[0]["job"], "stream": rows[0]["stream"],
                      "score": round(score, 6), "offset_s": round(offset, 3), "matched_segments": len(best),
                      "query_segments": len(query.vectors),
                      "span_s": [min(r["start_s"] for r in rows), max(r["end_s"] for r in rows)]})
    return sorted(found, key=lambda d: -d["score"])
