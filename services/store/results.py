"""The results stream, `reelflow:results`: every segment a bulk job stores, and every job's end,
appended by the same atomic write that stores the segment or ends the job — so an entry is there
once for each stored segment, in the order the job stored them, and never for one that was not.

Entries (all fields strings):

| kind | fields |
|---|---|
| `segment` | `job_id`, `index`, `result`: the segment's JSON without its embedding (that stays in the job's results) |
| `end` | `job_id`, `state` (done, failed, cancelled), `segments` (stored), `error` |

Downstream services read it with consumer groups of their own; it keeps about
REELFLOW_RESULTS_STREAM_MAX entries (the oldest are trimmed first):

    $ redis-cli XGROUP CREATE reelflow:results billing $ MKSTREAM
    $ redis-cli XREADGROUP GROUP billing worker-1 COUNT 100 BLOCK 5000 STREAMS reelflow:results >
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
import redis

from services.store import keys

SEGMENT, END = "segment", "end"

def add_end(p, job_id: str, state: str, segments: int, error: str, maxlen: int) -> None:
    """Queue, on pipeline `p`, a job's end (done, failed, cancelled) on the results stream."""
    p.xadd(keys.RESULTS, {"kind": END, "job_id": job_id, "state": state, "segments": segments, "error": error or ""},
           maxlen=maxlen, approximate=True)


def without_embedding(result_json: str) -> str:
    """A segment's JSON as the results stream carries it: its embedding left out (kilobytes each)."""
    result = json.loads(result_json)
    if not any(k.startswith("embedding") for k in result):  # `embedding_b64` (stored) or `embedding`
        return result_json
    return json.dumps({k: v for k, v in result.items() if not k.startswith("embedding")})


@dataclass(frozen=True)
class ResultEntry:
    """One entry of the results stream."""

    id: str
    kind: str  # SEGMENT or END
    job_id: str
    index: int | None = None  # a segment's
    result: dict | None = None  # a segment's, without its embedding
    state: str | None = None  # an end's
    error: str = ""

    @classmethod
    def parse(cls, entry_id, fields: dict) -> ResultEntry:
        f = {_text(k): _text(v) for k, v in fields.items()}
        if f.get("kind") == SEGMENT:
            return cls(_text(entry_id), SEGMENT, f["job_id"], int(f["index"]), json.loads(f["result"]))
        return cls(_text(entry_id), f.get("kind", ""), f.get("job_id", ""), state=f.get("state"), error=f.get("error", ""))


class ResultsStream:
    """Reading `reelflow:results`."""

    def __init__(self, client: redis.Redis):
        self.r = client

    def last_id(self) -> str:
        """The newest entry's id ("0-0" when empty): reading after it gets only what comes next."""
        newest = self.r.xrevrange(keys.RESULTS, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def read(self, after: str, block_ms: int | None = None, count: int = 500) -> list[ResultEntry]:
        """Entries after id `after`, waiting up to `block_ms` for one when there are none."""
        answer = self.r.xread({keys.RESULTS: after}, count=count, block=block_ms)
        return [ResultEntry.parse(i, f) for _, entries in answer for i, f in entries]


def follow_job(queue, job_id: str, block_ms: int = 1000) -> Iterator[dict]:
    """A JobQueue's job's segments as they are stored — those stored already first — each once, whole (with
    its embedding); ends when the job ends (done, failed, cancelled) or expires."""
    stream = ResultsStream(queue.r)
    after = stream.last_id()  # before reading what is stored: nothing falls between the two
    sent: set[int] = set()
    for segment in queue.segments(job_id):
        sent.add(segment["index"])
        yield segment
    while True:
        record = queue.record(job_id)
        if record is None or record.state.terminal:
            break
        entries = stream.read(after, block_ms=block_ms)
        if entries:
            after = entries[-1].id
        ended = False
        for entry in entries:
            if entry.job_id != job_id:
                continue
            if entry.kind == END:
                ended = True
                break
            if entry.index not in sent:
                sent.add(entry.index)
                yield _whole(queue, job_id, entry)
        if ended:
            break
    # the end, or a record seen ended: whatever was stored and not yet sent (say, trimmed off the stream)
    for segment in queue.segments(job_id):
        if segment["index"] not in sent:
            sent.add(segment["index"])
            yield segment


def _whole(queue, job_id: str, entry: ResultEntry) -> dict:
    raw = queue.r.hget(keys.segments(job_id), entry.index)
    return json.loads(raw) if raw is not None else {**entry.result, "job_id": job_id}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
