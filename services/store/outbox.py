"""Sink outboxes: what each sink (a webhook, an MQTT broker, a directory) has still to deliver,
queued durably in Redis.

A message goes into the outbox of every sink it is for by the same atomic write that stores the
segment, ends the job or publishes the stream window (see queue.py and streams.py): nothing
stored is missing from an outbox, nothing is queued twice. One worker at a time delivers a sink's
outbox (it holds the sink's lease), oldest first, and deletes what the sink took; so delivery is
at least once and in order per job and per stream. A batch the sink keeps refusing goes to the
sinks' dead-letter list, whence `reelflow dlq replay --sinks ID` puts it back.

Live streams' messages are dropped, and counted, while a sink's backlog is at
REELFLOW_SINK_BACKLOG; jobs' messages are never dropped.

The messages (JSON), each with the fields that identify it, for a receiver to drop repeats:

    {"type": "segment", "job_id": ..., "index": ..., "segment": {...}}
    {"type": "job", "job_id": ..., "state": "done|failed|cancelled", "segments": N, "error": ...}
    {"type": "stream.segment", "stream": ..., "index": ..., "segment": {...}}
    {"type": "stream.event", "stream": ..., "index": ..., "event": {...}}
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import redis

from services.store import keys
from services.store.client import redact
from services.store.leases import Leases



def sink_id(url: str) -> str:
    """A sink's id: the same URL is the same sink, wherever it was named."""
    return hashlib.sha1(url.encode()).hexdigest()[:12]


# -- the messages --

def segment_message(job_id: str, index: int, segment: dict) -> str:
    return json.dumps({"type": "segment", "job_id": job_id, "index": index, "segment": segment})


def job_end_message(job_id: str, state: str, segments: int, error: str) -> str:
    return json.dumps({"type": "job", "job_id": job_id, "state": state, "segments": segments, "error": error or ""})


def stream_segment_message(stream: str, result: dict) -> str:
    return json.dumps({"type": "stream.segment", "stream": stream, "index": result["index"], "segment": result})


def stream_event_message(stream: str, event: dict) -> str:
    return json.dumps({"type": "stream.event", "stream": stream, "index": event.get("index"), "event": event})


def enqueue(p, sink_ids: list[str], message: str) -> None:
    """Queue, on pipeline `p`, a job's message on the outboxes of `sink_ids` (never dropped)."""
    for sid in sink_ids:
        p.xadd(keys.sink_outbox(sid), {"m": message})


class Outboxes:
    """The sinks known to this Redis, their outboxes, leases, statuses and dead letters."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self.leases = Leases(client)  # one deliverer per sink

    # -- which sinks there are --

    def register(self, urls: list[str]) -> list[str]:
        """Make the sinks of a job or stream known (deliverers serve every known sink); their ids."""
        for url in urls:
            self.r.hsetnx(keys.SINKS, sink_id(url), json.dumps({"url": url, "global": False}))
        return [sink_id(url) for url in urls]

    def set_global(self, urls: list[str]) -> None:
        """The stack's REELFLOW_SINKS: every job and stream delivers to these (the last `up` to start sets them)."""
        with self.r.pipeline(transaction=True) as p:
            for sid, sink in self.sinks().items():
                if sink["global"] and sink["url"] not in urls:
                    p.hset(keys.SINKS, sid, json.dumps({**sink, "global": False}))
            for url in urls:
                p.hset(keys.SINKS, sink_id(url), json.dumps({"url": url, "global": True}))
            p.execute()

    def sinks(self) -> dict[str, dict]:
        """{sink id: {"url", "global"}}."""
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(keys.SINKS).items()}

    def targets(self, urls: list[str] | None) -> list[str]:
        """The sinks a job or stream naming `urls` delivers to: the global ones and its own, once each."""
        ids = [sid for sid, sink in self.sinks().items() if sink["global"]]
        return list(dict.fromkeys([*ids, *map(sink_id, urls or [])]))  # a sink named twice gets each message once

    # -- delivering one sink's outbox --

    def acquire(self, sid: str, holder: str, lease_s: float) -> bool:
        return self.leases.acquire(keys.sink_lease(sid), holder, lease_s)

    def renew(self, sid: str, holder: str, lease_s: float) -> bool:
        return self.leases.renew(keys.sink_lease(sid), holder, lease_s)

    def release(self, sid: str, holder: str) -> None:
        self.leases.release(keys.sink_lease(sid), holder)

    def waiting(self, holder: str) -> dict[str, str]:
        """{sink id: url} of the sinks with messages waiting that no one but `holder` delivers (one round trip)."""
        sinks = self.sinks()
        with self.r.pipeline(transaction=False) as p:
            for sid in sinks:
                p.xlen(keys.sink_outbox(sid))
                p.get(keys.sink_lease(sid))
            answers = p.execute()
        return {sid: sink["url"] for (sid, sink), backlog, lease in zip(sinks.items(), answers[::2], answers[1::2])
                if backlog and lease in (None, holder.encode())}

    def backlog(self, sid: str) -> int:
        return self.r.xlen(keys.sink_outbox(sid))

    def peek(self, sid: str, count: int) -> list[tuple[str, dict]]:
        """The oldest `count` messages waiting: (entry id, message). An entry that is not a message
        (written by something else) is set aside in the dead-letter list, so it cannot block the sink."""
        batch, unreadable = [], []
        for entry_id, fields in self.r.xrange(keys.sink_outbox(sid), count=count):
            try:
                batch.append((entry_id.decode(), json.loads(fields[b"m"])))
            except (KeyError, ValueError):
                unreadable.append((entry_id.decode(), {k.decode(errors="replace"): v.decode(errors="replace")
                                                       for k, v in fields.items()}))
        if unreadable:
            self.dead_letter(sid, self.sinks().get(sid, {}).get("url", ""), unreadable, "not a reelflow message")
            return self.peek(sid, count)
        return batch

    def delivered(self, sid: str, entry_ids: list[str]) -> None:
        self.r.xdel(keys.sink_outbox(sid), *entry_ids)  # first, alone: it frees memory, so Redis allows it when full
        with self.r.pipeline(transaction=True) as p:
            p.hincrby(keys.sink_status(sid), "delivered", len(entry_ids))
            p.hset(keys.sink_status(sid), mapping={"last_ok_at": time.time(), "retrying_since": "", "last_error": ""})
            try:
                p.execute()
            except redis.ResponseError:  # out of memory: the counters lag, the messages are gone as they should be
                pass

    def failed_once(self, sid: str, reason: str, since: float) -> None:
        """A delivery failed and will be tried again (shown in `status`)."""
        self.r.hset(keys.sink_status(sid), mapping={"last_error": reason, "retrying_since": since,
                                                     "last_error_at": time.time()})

    def dead_letter(self, sid: str, url: str, entries: list[tuple[str, dict]], reason: str) -> str:
        """Move a batch the sink gave up on to the sinks' dead-letter list; its id there."""
        dlq_id = uuid.uuid4().hex[:12]
        entry = {"id": dlq_id, "sink": sid, "url": redact(url), "reason": reason, "at": time.time(),
                 "messages": [m for _, m in entries]}
        with self.r.pipeline(transaction=True) as p:
            p.hset(keys.SINK_DEAD_LETTERS, dlq_id, json.dumps(entry))
            p.xdel(keys.sink_outbox(sid), *[i for i, _ in entries])
            p.hincrby(keys.sink_status(sid), "dead_lettered", len(entries))
            p.hset(keys.sink_status(sid), mapping={"last_error": reason, "retrying_since": "",
                                                   "last_error_at": time.time()})
            p.execute()
        return dlq_id

    def dead_letters(self) -> list[dict]:
        entries = [json.loads(v) for v in self.r.hgetall(keys.SINK_DEAD_LETTERS).values()]
        return sorted(entries, key=lambda e: e["at"])

    def replay(self, dlq_id: str) -> int | None:
        """Queue a dead-lettered batch on its sink's outbox again; how many messages (None: no such entry)."""
        while True:
            with self.r.pipeline(transaction=True) as p:
                try:
                    p.watch(keys.SINK_DEAD_LETTERS)  # two replays at once: one queues it
                    raw = p.hget(keys.SINK_DEAD_LETTERS, dlq_id)
                    if raw is None:
                        return None
                    entry = json.loads(raw)
                    p.multi()
                    for message in entry["messages"]:  # at the end of the outbox, after what waits there now
                        p.xadd(keys.sink_outbox(entry["sink"]), {"m": json.dumps(message)})
                    p.hdel(keys.SINK_DEAD_LETTERS, dlq_id)
                    p.execute()
                    return len(entry["messages"])
                except redis.WatchError:
                    continue

    # -- for `status` and `streams list` --

    def status(self, sid: str) -> dict:
        raw = {k.decode(): v.decode() for k, v in self.r.hgetall(keys.sink_status(sid)).items()}
        sink = self.sinks().get(sid, {})
        holder = self.leases.holder(keys.sink_lease(sid))
        return {"id": sid, "url": redact(sink.get("url", "")), "global": sink.get("global", False),
                "backlog": self.backlog(sid), "delivered": int(raw.get("delivered") or 0),
                "dead_lettered": int(raw.get("dead_lettered") or 0), "dropped": int(raw.get("dropped") or 0),
                "last_error": raw.get("last_error", ""), "retrying_since": float(raw["retrying_since"])
                if raw.get("retrying_since") else None,
                "last_ok_at": float(raw["last_ok_at"]) if raw.get("last_ok_at") else None,
                "deliverer": holder}

    def statuses(self) -> list[dict]:
        return [self.status(sid) for sid in sorted(self.sinks())]
