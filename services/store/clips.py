"""Evidence clips of live streams, as records in Redis (the files are on disk, under
REELFLOW_CLIPS_DIR): what `reelflow clips`, the API and the dashboard list.

A record (JSON) holds the clip's id, stream, label, event index, path, start (stream time and
wall clock), duration and state: `recording` while its post-roll is written, then `ready` or
`failed` with a one-line `reason`. Records expire with the clips' retention age; a record whose
file is gone (deleted by retention, or on another machine's disk) is listed as `deleted`.
"""

from __future__ import annotations

import json
import os

import redis

from services.store import keys

LISTED_AT_MOST = 1000


class ClipStore:
    def __init__(self, client: redis.Redis):
        self.r = client

    def save(self, record: dict, keep_s: float) -> None:
        """Write (or update) a clip's record, kept `keep_s` seconds."""
        with self.r.pipeline(transaction=True) as p:
            p.set(keys.clip(record["id"]), json.dumps(record), ex=max(1, int(keep_s)))
            p.zadd(keys.CLIPS, {record["id"]: record.get("started_at") or 0.0})
            p.execute()

    def get(self, clip_id: str) -> dict | None:
        raw = self.r.get(keys.clip(clip_id))
        return _shown(json.loads(raw)) if raw else None

    def list(self, stream: str | None = None, limit: int = 50) -> list[dict]:
        """The latest clips first (of one stream, or all)."""
        ids = [i.decode() for i in self.r.zrevrange(keys.CLIPS, 0, LISTED_AT_MOST - 1)]
        if not ids:
            return []
        raws = self.r.mget([keys.clip(i) for i in ids])
        expired = [i for i, raw in zip(ids, raws) if raw is None]
        if expired:
            self.r.zrem(keys.CLIPS, *expired)
        records = [_shown(json.loads(raw)) for raw in raws if raw is not None]
        return [r for r in records if stream is None or r["stream"] == stream][:limit]


def _shown(record: dict) -> dict:
    """A record as listed: a ready clip whose file is gone is `deleted`."""
    if record.get("state") == "ready" and not os.path.exists(record.get("path", "")):
        return {**record, "state": "deleted", "reason": "its file is gone (retention, or another machine's disk)"}
    return record
