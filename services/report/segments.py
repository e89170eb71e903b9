"""The segments a report or an annotated video is made from: a JSON-lines file, or a job's stored
segments on a running stack. Bad input is a one-line `ReelflowError` naming the line and the fix.

    >>> results = load_results("segments.jsonl")          # `reelflow classify VIDEO --json --embeddings`
    >>> results = load_results("3f0c9a1e2b7d4c55")        # a job of the running stack (`--home` picks it)
    >>> results.segments[0].labels[0], results.origin
    ('arm wrestling', 'segments.jsonl')
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ReelflowError, one_line
from pipelines.results import SegmentResult
from services.settings import settings_for
from services.store.connection import connect

REQUIRED = ("index", "start_s", "end_s", "labels", "scores")
MAKE_ONE = "make one with `reelflow classify VIDEO --json --embeddings > segments.jsonl`"


@dataclass
class Results:
    segments: list[SegmentResult]  # in time order
    origin: str  # the file, or "job <id>"
    note: str | None = None  # e.g. that the job is still running

    @property
    def has_embeddings(self) -> bool:
        return all(s.embedding is not None and s.embedding.size for s in self.segments)


def load_results(target: str, home: str | None = None) -> Results:
    """Segments from a JSON-lines file (when `target` is one) or from the job `target` of a running stack."""
    path = Path(target).expanduser()
    if path.exists() or "/" in target or path.suffix:
        return Results(_from_file(path), str(target))
    return _from_job(target, home)


def _from_file(path: Path) -> list[SegmentResult]:
    if path.is_dir():
        raise ReelflowError(f"{str(path)!r} is a directory; give a JSON-lines file of segment results")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReelflowError(f"cannot read {str(path)!r}: no such file (nor a job id); check the path") from None
    except UnicodeDecodeError:
        raise ReelflowError(f"{str(path)!r} is not text; give the JSON-lines results (video first, results "
                            "second for `reelflow annotate`)") from None
    except OSError as e:
        raise ReelflowError(f"cannot read {str(path)!r} ({one_line(e)})") from None
    segments = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReelflowError(f"{path} line {number} is not JSON ({e.msg}); expected one segment result per "
                                "line, as `reelflow classify --json` writes") from None
        segments.append(_segment(row, f"{path} line {number}"))
    if not segments:
        raise ReelflowError(f"{path} holds no segments; {MAKE_ONE}")
    return _checked(segments, str(path))


def _from_job(job_id: str, home: str | None) -> Results:
    try:
        queue = connect(settings_for(home))
    except ReelflowError as e:
        raise ReelflowError(f"{job_id!r} is not a file, and it cannot be looked up as a job: {e}") from None
    record = queue.record(job_id)
    if record is None:
        raise ReelflowError(f"no file and no job {job_id!r} (finished jobs expire after REELFLOW_RESULT_TTL_S)")
    rows = queue.segments(job_id)
    if not rows:
        raise ReelflowError(f"job {job_id} has no segments yet (state {record.state.value}); try again when it has run")
    segments = [_segment(row, f"job {job_id} segment {row.get('index', '?')}") for row in rows]
    note = None
    if record.state.value != "done":
        note = f"job {record.state.value}: {record.segments_done}/{record.segments_total or '?'} segments"
    return Results(_checked(segments, f"job {job_id}"), f"job {job_id}", note)


def _segment(row, where: str) -> SegmentResult:
    if not isinstance(row, dict):
        raise ReelflowError(f"{where} is not a JSON object; expected a segment result ({MAKE_ONE})")
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise ReelflowError(f"{where} has no {', '.join(missing)}; expected a segment result ({MAKE_ONE})")
    row = {"source": row.get("job_id") or row.get("stream") or "", "model": "?", "weights": "?", **row}
    try:
        segment = SegmentResult.from_dict(row)
        segment.index, segment.start_s, segment.end_s = int(row["index"]), float(row["start_s"]), float(row["end_s"])
        segment.labels = [str(label) for label in row["labels"]]
        segment.scores = [float(score) for score in row["scores"]]
    except (TypeError, ValueError, binascii.Error) as e:
        raise ReelflowError(f"{where} is not a valid segment result ({e})") from None
    if len(segment.labels) != len(segment.scores):
        raise ReelflowError(f"{where} has {len(segment.labels)} labels but {len(segment.scores)} scores")
    if not segment.end_s >= segment.start_s >= 0:
        raise ReelflowError(f"{where} ends before it starts ({segment.start_s} to {segment.end_s} s)")
    return segment


def _checked(segments: list[SegmentResult], origin: str) -> list[SegmentResult]:
    """In time order, one video's segments, embeddings all of one size."""
    seen: set[int] = set()
    for s in segments:
        if s.index in seen:
            raise ReelflowError(f"{origin} has two segments with index {s.index}; give one video's results")
        seen.add(s.index)
    sizes = {s.embedding.size for s in segments if s.embedding is not None}
    if len(sizes) > 1:
        raise ReelflowError(f"{origin} has embeddings of different sizes {sorted(sizes)}; give one model's results")
    return sorted(segments, key=lambda s: (s.start_s, s.index))
