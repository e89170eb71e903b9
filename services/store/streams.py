"""Live streams in Redis: which streams to watch, who reads each, and what they found.

A stream is watched while its spec is in the registry. Exactly one worker reads it: the one
holding its owner key, a lease renewed every couple of seconds; when that worker dies the lease
expires and another worker takes the stream over. Results and label events go to capped Redis
streams that `reelflow tail` follows; the owner keeps a status hash for `reelflow streams list`.

    >>> registry = StreamRegistry(redis.Redis.from_url(url))                    # doctest: +SKIP
    >>> registry.register(StreamSpec(name="door", url="rtsp://cam1/stream"))
    >>> registry.acquire("door", "worker-1", lease_s=10)
    True
"""

from __future__ import annotations

import json
import re
import time

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS
from services.store import keys
from services.store.client import redis_client
from services.store.index_outbox import OFFER_LUA, index_entry
from services.store.jobs import ModelName, SinkUrl
from services.store.leases import Leases
from services.store.outbox import Outboxes, stream_event_message, stream_segment_message

RESULTS_KEPT = 10_000  # segments per stream (about 4.5 hours at one per 1.6 s)
EVENTS_KEPT = 1_000

# Publish a window only while the caller owns the stream: a worker cut off from Redis longer than its
# lease, whose stream another worker took meanwhile, publishes nothing when it comes back.
# The window is offered to the vector index (KEYS[4], KEYS[5]; ARGV[7..9]: the backlog limit, the
# row, the vector; an empty row: not indexed). The window and its events also go to the stream's
# sinks' outboxes (KEYS[6..]: outbox, status pairs), as messages ARGV[10+n..10+2n]; one whose
# backlog is at ARGV[5] drops them, counted.
PUBLISH_IF_OWNER = OFFER_LUA + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'result', ARGV[2])
for i = 10, 9 + n do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[i])
end
offer(KEYS[4], KEYS[5], ARGV[7], ARGV[8], ARGV[9])
for k = 6, #KEYS, 2 do
  if redis.call('XLEN', KEYS[k]) >= tonumber(ARGV[5]) then  -- the window and its events: all or none
    redis.call('HINCRBY', KEYS[k + 1], 'dropped', n + 1)
  else
    for j = 10 + n, 10 + 2 * n do redis.call('XADD', KEYS[k], '*', 'm', ARGV[j], 'live', '1') end
  end
end
return 1
"""
SET_STATUS_IF_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
"""


class StreamSpec(BaseModel):
    """A live source to classify continuously."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1, max_length=2000, description="rtsp(s)/http(s)/udp/rtp URL, or a file played live")
    model: ModelName = DEFAULT_MODEL
    weights: str = DEFAULT_WEIGHTS
    stride_s: float | None = Field(None, gt=0, description="seconds between window starts (default: the clip length)")
    transport: str = Field("auto", pattern="^(auto|tcp|udp)$",
                           description="RTSP transport: auto tries TCP, then UDP, and keeps the one that works")
    topk: int = Field(5, ge=1, le=1000)
    smoothing: int = Field(3, ge=1, le=100, description="segments in the moving average of scores")
    enter: float = Field(0.5, ge=0, le=1, description="smoothed score at which a label becomes current")
    exit: float = Field(0.3, ge=0, le=1, description="smoothed score below which the current label ends")
    max_in_flight: int = Field(2, ge=1, le=64, description="clips waiting for the model before the oldest is dropped")
    sinks: list[SinkUrl] = Field(default_factory=list, max_length=8,
                                 description="where its segments and label events also go: http(s)://, mqtt(s)://, file:///DIR")
    index: bool = Field(True, description="its windows' embeddings go to the vector index (`reelflow search`)")
    record: list[str] = Field(default_factory=list, max_length=64,
                              description="labels whose enter events record an evidence clip; [\"*\"]: every one")
    pre_s: float = Field(5.0, ge=0, le=60, description="seconds of video a clip keeps before its event")
    post_s: float = Field(5.0, ge=0, le=300, description="seconds a clip records after its (latest) event")
    max_clip_s: float = Field(60.0, ge=1, le=600, description="longest clip: events inside a clip extend it up to this")
    created_at: float = Field(default_factory=time.time)

    @field_validator("record")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        labels = [label.strip() for label in value if label.strip()]
        if any(len(label) > 200 for label in labels):
            raise ValueError("a label to record is at most 200 characters")
        return ["*"] if "*" in labels or "all" in labels else sorted(set(labels))

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"stream name {value!r} may hold only letters, digits, '.', '_' and '-'")
        return value



class StreamRegistry:
    def __init__(self, client: redis.Redis):
        self.r = client
        self.leases = Leases(client)  # the owner key: who reads the stream
        self._publish = client.register_script(PUBLISH_IF_OWNER)
        self._set_status = client.register_script(SET_STATUS_IF_OWNER)

    @classmethod
    def at(cls, redis_url: str) -> StreamRegistry:
        """The registry of the Redis at `redis_url` (a stream's runner, in whatever process it runs)."""
        return cls(redis_client(redis_url))

    # -- what to watch --

    def register(self, spec: StreamSpec) -> bool:
        """Watch a stream; False if one of that name is already watched (stop it first)."""
        Outboxes(self.r).register(spec.sinks)
        return bool(self.r.hsetnx(keys.STREAMS, spec.name, spec.model_dump_json()))

    def sink_targets(self, urls: list[str]) -> list[str]:
        """The ids of the sinks a stream naming `urls` publishes to: the global ones and its own."""
        return Outboxes(self.r).targets(urls)

    def stop(self, name: str) -> bool:
        """Stop watching; its owner notices within a lease renewal. Its results are kept."""
        return bool(self.r.hdel(keys.STREAMS, name))

    def set_recording(self, name: str, record: list[str], pre_s: float, post_s: float, max_clip_s: float
                      ) -> StreamSpec | None:
        """Change a watched stream's recording rules (its runner picks them up within SINKS_EVERY_S);
        None if no stream of that name is watched. Raises ValidationError for bad rules."""
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(keys.STREAMS)
                    raw = p.hget(keys.STREAMS, name)
                    if raw is None:
                        return None
                    spec = StreamSpec.model_validate({**json.loads(raw), "record": record, "pre_s": pre_s,
                                                      "post_s": post_s, "max_clip_s": max_clip_s})
                    p.multi()
                    p.hset(keys.STREAMS, name, spec.model_dump_json())
                    p.execute()
                    return spec
                except redis.WatchError:
                    continue

    def specs(self) -> dict[str, StreamSpec]:
        return {k.decode(): StreamSpec.model_validate_json(v) for k, v in self.r.hgetall(keys.STREAMS).items()}

    def spec(self, name: str) -> StreamSpec | None:
        raw = self.r.hget(keys.STREAMS, name)
        return StreamSpec.model_validate_json(raw) if raw else None

    # -- who reads it --

    def acquire(self, name: str, worker: str, lease_s: float) -> bool:
        return self.leases.acquire(keys.stream_owner(name), worker, lease_s)

    def renew(self, name: str, worker: str, lease_s: float) -> bool:
        return self.leases.renew(keys.stream_owner(name), worker, lease_s)

    def release(self, name: str, worker: str) -> None:
        self.leases.release(keys.stream_owner(name), worker)

    def owner(self, name: str) -> str | None:
        return self.leases.holder(keys.stream_owner(name))

    # -- what it found --

    def publish(self, name: str, owner: str, result: dict, events: list[dict], sinks: list[str] = (),
                backlog: int = 10_000, index: tuple[dict, object, int] | None = None) -> bool:
        """Add a window's result and its label events, atomically, if `owner` still owns the stream;
        False (nothing added) if it does not. They go to the outboxes of `sinks` (ids) too, unless a
        sink has `backlog` messages waiting (then they are dropped and counted in its status).
        `index` (row, embedding, backlog limit): the window is offered to the vector index too."""
        messages = [stream_segment_message(name, result), *(stream_event_message(name, e) for e in events)] if sinks else []
        row, vector = index_entry(index[0], index[1]) if index else ("", b"")
        published = self._publish(keys=[keys.stream_owner(name), keys.stream_results(name), keys.stream_events(name),
                                        keys.INDEX_OUTBOX, keys.INDEX_STATUS,
                                        *(k for sid in sinks for k in (keys.sink_outbox(sid), keys.sink_status(sid)))],
                                  args=[owner, json.dumps(result), RESULTS_KEPT, EVENTS_KEPT, backlog, len(events),
                                        index[2] if index else 0, row, vector,
                                        *(json.dumps(e) for e in events), *messages])
        return bool(published)

    def next_index(self, name: str) -> int:
        """The index of the stream's next window: one past the last published (by any owner), so
        that a stream taken over numbers on, and no index is published twice."""
        latest = self.recent(name, 1)
        return latest[-1][1]["index"] + 1 if latest else 0

    def set_status(self, name: str, owner: str, status: dict) -> bool:
        """Write the stream's status hash if `owner` still owns the stream; False if it does not."""
        fields = [x for k, v in status.items() for x in (k, json.dumps(v))]
        return bool(self._set_status(keys=[keys.stream_owner(name), keys.stream_status(name)], args=[owner, *fields]))

    def status(self, name: str) -> dict:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(keys.stream_status(name)).items()}

    def results(self, name: str, after: str = "0-0", block_ms: int | None = None, count: int = 100
                ) -> list[tuple[str, dict]]:
        """Results after entry id `after` ('$': only new ones), waiting up to `block_ms` for one."""
        reply = self.r.xread({keys.stream_results(name): after}, count=count, block=block_ms)
        return [(entry_id.decode(), json.loads(fields[b"result"])) for _, entries in reply or []
                for entry_id, fields in entries]

    def newer_results(self, after: dict[str, str], block_ms: int) -> dict[str, list[tuple[str, dict]]]:
        """New results of several streams ({name: entry id}) in one XREAD, waiting up to `block_ms`
        for the first: {name: [(entry id, result)]} for the streams that have some."""
        reply = self.r.xread({keys.stream_results(s): i for s, i in after.items()}, count=100, block=block_ms)
        by_key = {keys.stream_results(s): s for s in after}
        return {by_key[key.decode()]: [(i.decode(), json.loads(f[b"result"])) for i, f in entries]
                for key, entries in reply or []}

    def recent(self, name: str, count: int) -> list[tuple[str, dict]]:
        """The stream's latest `count` results as (entry id, result), oldest first."""
        entries = self.r.xrevrange(keys.stream_results(name), count=count)
        return [(entry_id.decode(), json.loads(fields[b"result"])) for entry_id, fields in reversed(entries)]

    def last_result_id(self, name: str) -> str:
        """The id of the stream's latest result ('0-0' if none): follow from there without a gap."""
        latest = self.recent(name, 1)
        return latest[-1][0] if latest else "0-0"

    def events(self, name: str) -> list[dict]:
        return [json.loads(fields[b"event"]) for _, fields in self.r.xrange(keys.stream_events(name))]
