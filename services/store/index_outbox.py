"""The index outbox: segments waiting to go into the vector index (services.index), in Redis.

An entry is written by the same atomic step that stores a job's segment (queue.py) or publishes a
stream's window (streams.py), so what is stored is offered to the index exactly once; the
indexers of every `up` read the outbox as one Redis Streams consumer group (`indexers`), append
what they read to the index in batches and only then acknowledge it: indexing is at least once
(a crash between the two appends a batch again; searches drop the repeats). An indexer that dies
leaves its entries pending; another claims them after CLAIM_IDLE_MS.

Storing never waits for the index: while the outbox holds REELFLOW_INDEX_BACKLOG entries, new
segments are not offered (counted in `dropped`). Deleting a job's vectors (cancel, expiry) is an
entry too, so it is applied after the segments offered before it; and the job is remembered as
deleted for a day, so that a repeat delivered later is not indexed again.

Entry fields: `row` (JSON: the index row without its vector), `v` (the embedding, float32 little
endian), or `delete` (a job id).
"""

from __future__ import annotations

import json
import time

import redis

from services.store import keys
from services.store.client import redact

GROUP = "indexers"
CLAIM_IDLE_MS = 60_000  # an entry read this long ago and not acknowledged: its indexer died
DELETED_KEPT_S = 24 * 3600


def index_row(kind: str, name: str, source: str, result: dict, model: str, weights: str, at: float) -> dict:
    """A segment's row for the vector index (vectors.COLUMNS, model, weights): `kind` "job" (`name`:
    the job id) or "stream" (the stream's name); `result` the segment's result as stored."""
    return {"id": f"{kind}:{name}:{result['index']}", "kind": kind, "job": name if kind == "job" else "",
            "stream": name if kind == "stream" else "", "source": redact(source), "segment": result["index"],
            "start_s": result.get("start_s", 0.0), "end_s": result.get("end_s", 0.0),
            "label": (result.get("labels") or [""])[0], "score": (result.get("scores") or [0.0])[0], "at": at,
            "model": result.get("model", model), "weights": result.get("weights", weights)}


def index_entry(row: dict, embedding) -> tuple[str, bytes]:
    """The two arguments the store scripts take for the index: the row's JSON and its vector."""
    import numpy as np  # here: client commands import the store, and start faster without numpy

    return json.dumps(row), np.asarray(embedding, dtype="<f4").tobytes()


class IndexOutbox:
    def __init__(self, client: redis.Redis):
        self.r = client

    def read(self, consumer: str, count: int = 500, block_ms: int | None = 1000) -> list[tuple[str, dict]]:
        """Entries for `consumer`: first those another indexer left pending too long, then new ones
        (waiting up to `block_ms` for one; None: not waiting). Each as (entry id, {"row": dict,
        "vector": ndarray} or {"delete": job id})."""
        self._group()
        reply = self.r.xautoclaim(keys.INDEX_OUTBOX, GROUP, consumer, CLAIM_IDLE_MS, count=count)
        entries = list(reply[1])  # Redis 7 adds a third element (entries deleted meanwhile), 6.2 does not
        if not entries:
            reply = self.r.xreadgroup(GROUP, consumer, {keys.INDEX_OUTBOX: ">"}, count=count, block=block_ms)
            entries = [e for _, stream_entries in reply or [] for e in stream_entries]
        return [(entry_id.decode(), _decode(fields)) for entry_id, fields in entries if fields]

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            with self.r.pipeline(transaction=True) as p:
                p.xack(keys.INDEX_OUTBOX, GROUP, *entry_ids)
                p.xdel(keys.INDEX_OUTBOX, *entry_ids)
                p.hincrby(keys.INDEX_STATUS, "indexed", len(entry_ids))
                p.execute()

    def delete_job(self, p, job_id: str) -> None:
        """Queue, on pipeline `p` (the cancel's transaction), the removal of a job's vectors."""
        p.xadd(keys.INDEX_OUTBOX, {"delete": job_id})
        p.zadd(keys.INDEX_DELETED, {job_id: time.time()})

    def deleted(self, job_ids: set[str]) -> set[str]:
        """Which of these jobs were deleted (their late repeats are not indexed)."""
        if not job_ids:
            return set()
        ordered = sorted(job_ids)
        scores = self.r.zmscore(keys.INDEX_DELETED, ordered)
        self.r.zremrangebyscore(keys.INDEX_DELETED, 0, time.time() - DELETED_KEPT_S)
        return {j for j, s in zip(ordered, scores) if s is not None}

    def jobs_gone(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs have no record any more (expired): their vectors go too."""
        with self.r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.exists(keys.job(job_id))
            return [j for j, alive in zip(job_ids, p.execute()) if not alive]

    def backlog(self) -> int:
        return self.r.xlen(keys.INDEX_OUTBOX)

    def set_error(self, error: str) -> None:
        """What keeps the indexer from writing the index ("": nothing any more), for `status`."""
        self.r.hset(keys.INDEX_STATUS, "last_error", error)

    def status(self) -> dict:
        """Indexed and dropped (over the backlog) entries so far, those waiting, the indexer's error."""
        fields = {k.decode(): v.decode() for k, v in self.r.hgetall(keys.INDEX_STATUS).items()}
        return {"indexed": int(fields.get("indexed", 0)), "dropped": int(fields.get("dropped", 0)),
                "waiting": self.backlog(), "last_error": fields.get("last_error", "")}

    def _group(self) -> None:
        try:
            self.r.xgroup_create(keys.INDEX_OUTBOX, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise


def _decode(fields: dict) -> dict:
    if b"delete" in fields:
        return {"delete": fields[b"delete"].decode()}
    import numpy as np

    return {"row": json.loads(fields[b"row"]), "vector": np.frombuffer(fields[b"v"], dtype="<f4")}


# The Lua that offers a segment to the index, inside the store scripts: KEYS[k] the outbox,
# KEYS[k+1] its status; ARGV[a] the backlog limit, ARGV[a+1] the row, ARGV[a+2] the vector.
OFFER_LUA = """
local function offer(outbox, status, limit, row, vector)
  if row == '' then return end
  if redis.call('XLEN', outbox) >= tonumber(limit) then
    redis.call('HINCRBY', status, 'dropped', 1)
  else
    redis.call('XADD', outbox, '*', 'row', row, 'v', vector)
  end
end
"""
