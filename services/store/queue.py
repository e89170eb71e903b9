"""The job queue on Redis Streams: submit, claim, renew, finish, retry, dead-letter, cancel.

Delivery is at least once: a job whose consumer dies is reclaimed after its lease and runs again,
resuming after its last stored segment. Segment results are written once per (job, index), so
results are exactly once. The job record (a hash) is the source of truth; stream entries only
deliver, and are acknowledged and deleted once their job has moved on.

Every delivery writes a fresh claim token into the job record, and everything a consumer does to
its job afterwards (store a segment, complete, retry, release, fail) happens only while the record
still holds that token: a worker that was cut off from Redis for longer than its lease, and whose
job another worker took meanwhile, gets `LeaseLost` when it comes back, and stops.

    >>> queue = JobQueue(redis.Redis.from_url(url), Settings.from_env())    # doctest: +SKIP
    >>> job_id, created = queue.submit(JobSpec(source="/videos/a.mp4"))
    >>> [claim] = queue.claim(count=1, block_ms=1000, consumer="worker-1")
    >>> queue.store_segment(claim, 0, '{"index": 0, ...}'); queue.complete(claim)
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from dataclasses import dataclass

import redis
from pydantic import ValidationError

from pipelines.errors import validation_problems
from services.store import keys
from services.store.index_outbox import OFFER_LUA, IndexOutbox, index_entry, index_row
from services.store.jobs import JobRecord, JobSpec, JobState
from services.store.outbox import Outboxes, enqueue, job_end_message, segment_message
from services.store.results import add_end, without_embedding
from services.store.streams import StreamRegistry
from services.settings import Settings

MAX_RETRY_DELAY_S = 300.0
DEAD_WORKER_MIN_IDLE_MS = 1000

# Reset the entry's idle time only if this consumer still holds it (a plain XCLAIM would steal it
# back from the consumer that reclaimed it).
RENEW_IF_OWNED = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""

# Store a segment once, and only while the caller's claim is the job's current one; offer it to
# the vector index (KEYS[4], KEYS[5]; ARGV[9..11]: backlog limit, row, vector; an empty row: not
# indexed) and queue its message for the job's sinks (KEYS[6..]).
STORE_IF_CLAIMED = OFFER_LUA + """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return -1
end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'segments_done', redis.call('HLEN', KEYS[2]), 'updated_at', ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'kind', 'segment', 'job_id', ARGV[5], 'index', ARGV[2],
           'result', ARGV[6])
offer(KEYS[4], KEYS[5], ARGV[9], ARGV[10], ARGV[11])
for i = 6, #KEYS do redis.call('XADD', KEYS[i], '*', 'm', ARGV[8]) end  -- the job's sinks' outboxes
return 1
"""


class LeaseLost(Exception):
    """The job is no longer this claim's: another consumer took it (this one's lease ran out), or it
    was cancelled or dead-lettered meanwhile."""

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id}: no longer this worker's (another worker holds it now, its lease having "
                         "run out, or it was cancelled)")
        self.job_id = job_id


@dataclass(frozen=True)
class Claim:
    """A job a consumer holds until it completes, retries, fails or loses it."""

    job_id: str
    entry_id: str
    consumer: str
    spec: JobSpec
    attempt: int  # deliveries so far, this one included
    stalled: int = 1  # deliveries in a row, this one included, that began with no new segment stored
    done_at_claim: int = 0  # segments stored when this delivery began
    token: str = ""  # this delivery's claim token, written in the job record
    sinks: tuple[str, ...] = ()  # ids of the sinks its segments and end go to (services.store.outbox)


class JobQueue:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.r = client
        self.settings = settings
        self._renew_script = client.register_script(RENEW_IF_OWNED)
        self._store_script = client.register_script(STORE_IF_CLAIMED)
        self.outboxes = Outboxes(client)
        self._create_group()

    def _create_group(self) -> None:
        try:  # from id 0: entries added with redis-cli before any worker ran are delivered too
            self.r.xgroup_create(keys.JOBS_STREAM, keys.CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # -- submitting --

    def submit(self, spec: JobSpec) -> tuple[str, bool]:
        """Queue a job; returns (job id, created). A repeated idempotency key returns the first job."""
        job_id = uuid.uuid4().hex[:16]
        if spec.idempotency_key:
            if not self.r.set(keys.idempotency(spec.idempotency_key), job_id, nx=True, ex=self.settings.result_ttl_s):
                existing = self.r.get(keys.idempotency(spec.idempotency_key))
                if existing:
                    return existing.decode(), False
        now = time.time()
        self.outboxes.register(spec.sinks)
        with self.r.pipeline(transaction=True) as p:
            p.hset(keys.job(job_id), mapping=_record_fields(JobState.QUEUED, spec, now))
            p.zadd(keys.JOBS_INDEX, {job_id: now})
            _deliver(p, job_id, spec)
            p.execute()
        return job_id, True

    # -- consuming --

    def claim(self, count: int, block_ms: int, consumer: str) -> list[Claim]:
        """Up to `count` jobs: first those of workers that died, then those whose lease ran out, then new ones."""
        try:
            return self._claim(count, block_ms, consumer)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # Redis came back without the stream (a restart that lost its last writes, or none kept):
            # make the group again; the job records are the truth, and retries re-deliver from them
            self._create_group()
            return self._claim(count, block_ms, consumer)

    def _claim(self, count: int, block_ms: int, consumer: str) -> list[Claim]:
        self._promote_due_retries()
        lease_ms = int(self.settings.lease_s * 1000)
        entries = self._from_dead_workers(consumer, count)
        if len(entries) < count:  # Redis 6.2 answers [cursor, entries], 7+ [cursor, entries, deleted ids]
            entries += self.r.xautoclaim(keys.JOBS_STREAM, keys.CONSUMER_GROUP, consumer, lease_ms, "0-0",
                                         count=count - len(entries))[1]
        if len(entries) < count:
            fresh = self.r.xreadgroup(keys.CONSUMER_GROUP, consumer, {keys.JOBS_STREAM: ">"},
                                      count=count - len(entries), block=block_ms)
            for _, stream_entries in fresh or []:
                entries.extend(stream_entries)
        claims = []
        for entry_id, fields in entries:
            if fields is None:  # deleted while pending
                self._ack(entry_id)
                continue
            claim = self._accept(entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}, consumer)
            if claim:
                claims.append(claim)
        return claims

    def _accept(self, entry_id: str, fields: dict[str, str], consumer: str) -> Claim | None:
        job_id = fields.get("job_id") or entry_id
        try:
            spec = parse_message(fields)
        except ValueError as e:
            self._dead_letter(job_id, entry_id, f"malformed job message: {e}", fields)
            return None
        record_key = keys.job(job_id)
        if not self.r.exists(record_key):  # submitted straight to the stream (redis-cli XADD)
            now = time.time()
            self.r.hset(record_key, mapping=_record_fields(JobState.QUEUED, spec, now))
            self.r.zadd(keys.JOBS_INDEX, {job_id: now}, nx=True)
        state = JobState(self.r.hget(record_key, "state").decode())
        if state.terminal:
            self._ack(entry_id)
            return None
        if state == JobState.RUNNING and self._held_elsewhere(record_key, entry_id):
            # a second entry of a job another delivery runs (a submit sent again after its reply was
            # lost, say): dropped, so that it does not take the job from its holder
            self._ack(entry_id)
            return None
        # The delivery limit counts attempts that got nowhere: a long job whose workers keep dying
        # still finishes, one segment further each time; a job that crashes at once does not.
        done, mark, stalled = self.r.hmget(record_key, "segments_done", "progress_mark", "stalled")
        done = int(done or 0)
        stalled = 1 if mark is None or done > int(mark) else int(stalled or 0) + 1
        if stalled > self.settings.max_attempts:
            last = (self.r.hget(record_key, "error") or b"").decode()
            self._dead_letter(job_id, entry_id, f"gave up after {stalled - 1} attempts without progress: "
                                                f"{last or 'worker lost'}", fields, segments=done, spec=spec)
            return None
        attempt = self.r.hincrby(record_key, "attempts", 1)
        token = uuid.uuid4().hex[:16]
        self.r.hset(record_key, mapping={"state": JobState.RUNNING.value, "consumer": consumer, "updated_at": time.time(),
                                         "progress_mark": done, "stalled": stalled, "claim": token,
                                         "entry": entry_id})
        self.outboxes.register(spec.sinks)  # a job XADDed by another client names them first here
        return Claim(job_id, entry_id, consumer, spec, attempt, stalled, done, token,
                     tuple(self.outboxes.targets(spec.sinks)))

    def _held_elsewhere(self, record_key: str, entry_id: str) -> bool:
        """Whether the job's running delivery is another stream entry, still pending in the group."""
        holder = (self.r.hget(record_key, "entry") or b"").decode()
        return bool(holder) and holder != entry_id and bool(
            self.r.xpending_range(keys.JOBS_STREAM, keys.CONSUMER_GROUP, holder, holder, 1))

    def renew(self, claim: Claim) -> bool:
        """Extend the lease; False when the job was reclaimed by another consumer or has ended."""
        owned = self._renew_script(keys=[keys.JOBS_STREAM], args=[keys.CONSUMER_GROUP, claim.entry_id, claim.consumer])
        state, token = self.r.hmget(keys.job(claim.job_id), "state", "claim")
        return bool(owned) and _holds(claim, state, token)

    # -- results --

    def set_total(self, job_id: str, total: int) -> None:
        self.r.hset(keys.job(job_id), "segments_total", total)

    def store_segment(self, claim: Claim, index: int, result_json: str) -> bool:
        """Store a segment result once; False if that index was already stored. Raises LeaseLost
        when the claim is no longer the job's (nothing is stored then)."""
        result, light = json.loads(result_json), without_embedding(result_json)
        message = segment_message(claim.job_id, index, result if self.settings.sink_embeddings
                                  else json.loads(light)) if claim.sinks else ""
        row, vector = self._index_entry(claim, result)
        stored = self._store_script(keys=[keys.job(claim.job_id), keys.segments(claim.job_id), keys.RESULTS,
                                          keys.INDEX_OUTBOX, keys.INDEX_STATUS, *map(keys.sink_outbox, claim.sinks)],
                                    args=[claim.token, str(index), result_json, time.time(), claim.job_id,
                                          light, self.settings.results_stream_max, message,
                                          self.settings.index_backlog, row, vector])
        if stored == -1:
            raise LeaseLost(claim.job_id)
        return bool(stored)

    def _index_entry(self, claim: Claim, result: dict) -> tuple[str, bytes]:
        """The segment's row and embedding for the vector index ("" and b"": not indexed)."""
        if not (self.settings.index and claim.spec.index and "embedding_b64" in result):
            return "", b""
        row = index_row("job", claim.job_id, claim.spec.source, result, claim.spec.model, claim.spec.weights,
                        time.time())
        import numpy as np  # here: client commands import the queue, and start faster without numpy

        return index_entry(row, np.frombuffer(base64.b64decode(result["embedding_b64"]), dtype="<f4"))

    def stored_indices(self, job_id: str) -> set[int]:
        return {int(i) for i in self.r.hkeys(keys.segments(job_id))}

    def segments(self, job_id: str) -> list[dict]:
        stored = self.r.hgetall(keys.segments(job_id))
        return [json.loads(stored[k]) for k in sorted(stored, key=int)]

    # -- ending a claim --

    def complete(self, claim: Claim) -> bool:
        """Mark the job done if every segment is stored; False (and nothing changes) otherwise."""
        def done(p, record: JobRecord) -> bool:
            if record.segments_total is None or record.segments_done < record.segments_total:
                return False
            p.hset(keys.job(claim.job_id), mapping={"state": JobState.DONE.value, "error": "", "updated_at": time.time()})
            self._expire(p, claim.job_id)
            _ack(p, claim.entry_id)
            self._end(p, claim.job_id, JobState.DONE, record.segments_done, "", list(claim.sinks))
            return True
        return self._as_holder(claim, done)

    def retry(self, claim: Claim, error: str) -> JobState:
        """A transient fault: back off and deliver again, or dead-letter after `max_attempts` in a row
        without progress."""
        def again(p, record: JobRecord) -> JobState:
            progressed = record.segments_done > claim.done_at_claim
            if not progressed and claim.stalled >= self.settings.max_attempts:
                _dead_letter(p, claim.job_id, claim.entry_id,
                             f"gave up after {claim.stalled} attempts without progress: {error}", None,
                             self.settings.results_stream_max, record.segments_done, claim.sinks)
                return JobState.FAILED
            backoff = 0 if progressed else claim.stalled - 1
            delay = min(MAX_RETRY_DELAY_S, self.settings.retry_base_s * 2 ** backoff) * random.uniform(0.5, 1.5)
            p.hset(keys.job(claim.job_id), mapping={"state": JobState.QUEUED.value, "error": error, "updated_at": time.time()})
            p.zadd(keys.RETRIES, {claim.job_id: time.time() + delay})
            _ack(p, claim.entry_id)
            return JobState.QUEUED
        return self._as_holder(claim, again)

    def release(self, claim: Claim) -> None:
        """Hand a job back untouched (the worker is stopping): queued again, the attempt not counted."""
        def hand_back(p, record: JobRecord) -> None:
            p.hset(keys.job(claim.job_id), mapping={"state": JobState.QUEUED.value, "updated_at": time.time(),
                                                    "claim": ""})
            p.hincrby(keys.job(claim.job_id), "attempts", -1)
            p.hincrby(keys.job(claim.job_id), "stalled", -1)
            _deliver(p, claim.job_id, claim.spec)
            _ack(p, claim.entry_id)
        try:
            self._as_holder(claim, hand_back)
        except LeaseLost:  # another worker has it already: nothing to hand back
            pass

    def fail(self, claim: Claim, error: str) -> None:
        """A bad job (unreadable, not a video, unknown model...): dead-letter it now."""
        self._as_holder(claim, lambda p, record: _dead_letter(p, claim.job_id, claim.entry_id, error, None,
                                                              self.settings.results_stream_max, record.segments_done,
                                                              claim.sinks))

    def _as_holder(self, claim: Claim, change):
        """`change(pipeline, record)` queues writes that apply only if `claim` is still the job's
        (raises LeaseLost otherwise), atomically with that check; returns what `change` returns."""
        key = keys.job(claim.job_id)
        while True:
            with self.r.pipeline(transaction=True) as p:
                try:
                    p.watch(key)
                    fields = p.hgetall(key)
                    if not _holds(claim, fields.get(b"state"), fields.get(b"claim")):
                        raise LeaseLost(claim.job_id)
                    record = JobRecord.from_hash(claim.job_id, {k.decode(): v.decode() for k, v in fields.items()})
                    p.multi()
                    outcome = change(p, record)
                    p.execute()
                    return outcome
                except redis.WatchError:  # the record changed meanwhile (a segment stored, a cancel): look again
                    continue

    def cancel(self, job_id: str) -> JobState | None:
        """Cancel a job that has not ended; returns its state afterwards (None: no such job)."""
        key = keys.job(job_id)
        while True:
            with self.r.pipeline(transaction=True) as p:
                try:
                    p.watch(key)  # a job that ends meanwhile stays ended
                    raw = p.hget(key, "state")
                    state = JobState(raw.decode()) if raw else None
                    if state is None or state.terminal:
                        return state
                    stored = p.hlen(keys.segments(job_id))
                    spec = p.hget(key, "spec")
                    targets = self.outboxes.targets(json.loads(spec).get("sinks", []) if spec else [])
                    p.multi()
                    p.hset(key, mapping={"state": JobState.CANCELLED.value, "updated_at": time.time(), "claim": ""})
                    p.zrem(keys.RETRIES, job_id)
                    self._expire(p, job_id)
                    self._end(p, job_id, JobState.CANCELLED, stored, "", targets)
                    IndexOutbox(self.r).delete_job(p, job_id)  # a cancelled job's segments leave the index
                    p.execute()
                    return JobState.CANCELLED
                except redis.WatchError:
                    continue

    # -- dead letters --

    def dead_letters(self) -> list[dict]:
        entries = [json.loads(v) for v in self.r.hgetall(keys.DEAD_LETTERS).values()]
        return sorted(entries, key=lambda e: e["at"])

    def replay(self, job_id: str) -> bool:
        """Queue a dead-lettered job again with fresh attempts; False if it is not in the list."""
        raw = self.r.hget(keys.DEAD_LETTERS, job_id)
        if raw is None:
            return False
        entry = json.loads(raw)
        record = self.record(job_id)
        if record is None or record.spec is None:
            return False  # a malformed message cannot run; it stays listed
        with self.r.pipeline(transaction=True) as p:
            p.hdel(keys.DEAD_LETTERS, job_id)
            p.persist(keys.job(job_id))
            p.persist(keys.segments(job_id))
            p.hset(keys.job(job_id), mapping={"state": JobState.QUEUED.value, "attempts": 0, "error": "", "claim": "",
                                              "stalled": 0, "progress_mark": -1,
                                              "updated_at": time.time()})
            _deliver(p, job_id, record.spec)
            p.execute()
        return bool(entry)

    # -- the connection --

    def ping(self) -> None:
        """Raise StoreUnavailable (redis.RedisError) if Redis does not answer."""
        self.r.ping()

    def stream_registry(self) -> StreamRegistry:
        """The live-stream registry on this queue's connection."""
        return StreamRegistry(self.r)

    # -- reading --

    def record(self, job_id: str) -> JobRecord | None:
        fields = self.r.hgetall(keys.job(job_id))
        if not fields:
            return None
        return JobRecord.from_hash(job_id, {k.decode(): v.decode() for k, v in fields.items()})

    def records(self, job_ids: list[str]) -> dict[str, JobRecord | None]:
        """Several job records in one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.hgetall(keys.job(job_id))
            replies = p.execute()
        return {job_id: JobRecord.from_hash(job_id, {k.decode(): v.decode() for k, v in fields.items()})
                if fields else None for job_id, fields in zip(job_ids, replies)}

    def state(self, job_id: str) -> JobState | None:
        raw = self.r.hget(keys.job(job_id), "state")
        return JobState(raw.decode()) if raw else None

    def job_ids(self, limit: int = 100) -> list[str]:
        """The most recent jobs first."""
        return [j.decode() for j in self.r.zrevrange(keys.JOBS_INDEX, 0, limit - 1)]

    def depth(self) -> dict[str, int]:
        """Waiting (never delivered), pending (claimed, not acknowledged) and retrying jobs."""
        groups = {g["name"].decode(): g for g in self.r.xinfo_groups(keys.JOBS_STREAM)}
        pending = int(groups.get(keys.CONSUMER_GROUP, {}).get("pending") or 0)
        # Acknowledged entries are deleted, so the stream holds exactly the waiting and the claimed
        # jobs (the group's `lag` would do, but Redis < 7 has none and XDEL makes it unknown).
        return {"waiting": max(0, self.r.xlen(keys.JOBS_STREAM) - pending), "pending": pending,
                "retrying": self.r.zcard(keys.RETRIES)}

    def announce(self, consumer: str, info: dict, ttl_s: float) -> None:
        """A worker's heartbeat: it is alive for `ttl_s` more seconds, and serves what `info` says."""
        with self.r.pipeline(transaction=False) as p:
            p.set(keys.worker(consumer), "1", px=int(ttl_s * 1000))
            p.hset(keys.WORKERS, consumer, json.dumps(info))
            p.execute()

    def retire(self, consumer: str) -> None:
        """A worker that stops cleanly: gone from the listings at once."""
        with self.r.pipeline(transaction=False) as p:
            p.delete(keys.worker(consumer))
            p.hdel(keys.WORKERS, consumer)
            p.execute()

    def workers(self) -> list[dict]:
        """Live workers: name, what they serve (`models`...), jobs they hold, seconds since they last read."""
        consumers = {_text(c["name"]): c for c in self.r.xinfo_consumers(keys.JOBS_STREAM, keys.CONSUMER_GROUP)}
        live = []
        for name, info in sorted(self.r.hgetall(keys.WORKERS).items()):
            name = name.decode()
            if self.r.exists(keys.worker(name)):
                c = consumers.get(name, {})
                live.append({"name": name, **json.loads(info), "pending": int(c.get("pending", 0)),
                             "idle_s": int(c.get("idle", 0)) / 1000})
        return live

    def _from_dead_workers(self, consumer: str, count: int) -> list:
        """Jobs held by workers whose presence expired, taken at once instead of after their lease.

        The minimum idle time keeps two live consumers from taking the same entry from each other:
        the first XCLAIM resets the entry's idle time."""
        entries: list = []
        for name in self.r.hkeys(keys.WORKERS):
            name = name.decode()
            if name == consumer or self.r.exists(keys.worker(name)):
                continue
            held = self.r.xpending_range(keys.JOBS_STREAM, keys.CONSUMER_GROUP, "-", "+", count - len(entries),
                                         consumername=name)
            if held:
                entries += self.r.xclaim(keys.JOBS_STREAM, keys.CONSUMER_GROUP, consumer, DEAD_WORKER_MIN_IDLE_MS,
                                         [h["message_id"] for h in held])
            else:  # nothing left: forget the dead worker
                self.r.hdel(keys.WORKERS, name)
                self.r.xgroup_delconsumer(keys.JOBS_STREAM, keys.CONSUMER_GROUP, name)
            if len(entries) >= count:
                break
        return entries

    # -- internals --

    def _promote_due_retries(self) -> None:
        for job_id in self.r.zrangebyscore(keys.RETRIES, "-inf", time.time(), start=0, num=100):
            if self.r.zrem(keys.RETRIES, job_id):  # only the consumer that removes it re-queues it
                record = self.record(job_id.decode())
                if record and record.spec and not record.state.terminal:
                    _deliver(self.r, record.job_id, record.spec)

    def _dead_letter(self, job_id: str, entry_id: str, error: str, fields: dict[str, str] | None,
                     segments: int = 0, spec: JobSpec | None = None) -> None:
        sinks = self.outboxes.targets(spec.sinks if spec else [])
        with self.r.pipeline(transaction=True) as p:
            _dead_letter(p, job_id, entry_id, error, fields, self.settings.results_stream_max, segments, sinks)
            p.execute()

    def _end(self, p, job_id: str, state: JobState, segments: int, error: str, sinks: list[str]) -> None:
        """Queue, on pipeline `p`, a job's end on the results stream and its sinks' outboxes."""
        add_end(p, job_id, state.value, segments, error, self.settings.results_stream_max)
        enqueue(p, sinks, job_end_message(job_id, state.value, segments, error))

    def _expire(self, p, job_id: str) -> None:
        p.expire(keys.job(job_id), self.settings.result_ttl_s)
        p.expire(keys.segments(job_id), self.settings.result_ttl_s)

    def _ack(self, entry_id) -> None:
        with self.r.pipeline(transaction=True) as p:
            _ack(p, entry_id)
            p.execute()


def parse_message(fields: dict[str, str]) -> JobSpec:
    """A stream entry's job: field `job` as JSON, or the job's fields given flat (redis-cli friendly)."""
    try:
        if "job" in fields:
            return JobSpec.model_validate_json(fields["job"])
        flat = {k: v for k, v in fields.items() if k != "job_id"}
        return JobSpec.model_validate(flat, strict=False)
    except ValidationError as e:
        raise ValueError(validation_problems(e, whole="message")[0]) from None


def _deliver(client, job_id: str, spec: JobSpec) -> None:
    """Put a job on the stream for a consumer to claim (`client`: a connection or a pipeline). Every
    delivery — the first, a retry, a hand-back, a replay — is this one entry."""
    client.xadd(keys.JOBS_STREAM, {"job_id": job_id, "job": spec.model_dump_json(exclude_none=True)})


def _holds(claim: Claim, state: bytes | None, token: bytes | None) -> bool:
    """Whether a job record with this state and claim token is still `claim`'s (STORE_IF_CLAIMED
    checks the same in Redis)."""
    return bool(claim.token) and token == claim.token.encode() and state == JobState.RUNNING.value.encode()


def _ack(p, entry_id) -> None:
    """Queue, on pipeline `p`, the end of a delivery: acknowledged and deleted from the stream."""
    p.xack(keys.JOBS_STREAM, keys.CONSUMER_GROUP, entry_id)
    p.xdel(keys.JOBS_STREAM, entry_id)


def _dead_letter(p, job_id: str, entry_id: str, error: str, fields: dict[str, str] | None, maxlen: int,
                 segments: int = 0, sinks: list[str] = ()) -> None:
    """Queue, on pipeline `p`, a job's move to the dead-letter list (`fields`: the message, if
    malformed), and its end on the results stream."""
    now = time.time()
    entry = {"job_id": job_id, "error": error, "at": now}
    if fields is not None:
        entry["message"] = fields
    p.hset(keys.job(job_id), mapping={"state": JobState.FAILED.value, "error": error, "updated_at": now, "claim": ""})
    p.hsetnx(keys.job(job_id), "created_at", now)
    p.zadd(keys.JOBS_INDEX, {job_id: now}, nx=True)
    p.hset(keys.DEAD_LETTERS, job_id, json.dumps(entry))
    _ack(p, entry_id)
    add_end(p, job_id, JobState.FAILED.value, segments, error, maxlen)
    enqueue(p, list(sinks), job_end_message(job_id, JobState.FAILED.value, segments, error))


def _record_fields(state: JobState, spec: JobSpec, now: float) -> dict:
    return {"state": state.value, "spec": spec.model_dump_json(exclude_none=True), "attempts": 0,
            "segments_done": 0, "error": "", "created_at": now, "updated_at": now}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
