"""Every Redis key reelflow uses. Nothing else names a key.

| key | type | holds |
|---|---|---|
| reelflow:jobs | stream | job deliveries; consumer group `workers`. Entries only deliver: the job record is the truth |
| reelflow:job:{id} | hash | the job record: state, spec, attempts, segments_done/total, error, timestamps |
| reelflow:job:{id}:segments | hash | segment index -> result JSON, written once per index (HSETNX) |
| reelflow:results | stream | every stored segment (labels, no embedding) and every job's end, for downstream consumer groups; capped |
| reelflow:jobs:index | sorted set | job ids by submit time, for listings |
| reelflow:idempotency:{key} | string | the job id a submit with that idempotency key created |
| reelflow:retries | sorted set | job ids waiting for a retry, scored by due time |
| reelflow:dlq | hash | job id -> dead-letter entry (error, when, the message) |
| reelflow:workers | hash | consumer name -> what the worker serves (JSON), for every worker seen |
| reelflow:worker:{name} | string | presence: exists while the worker beats; expires seconds after it dies |
| reelflow:streams | hash | stream name -> its spec (JSON); a stream is watched while it is here |
| reelflow:stream:{name}:owner | string | the worker that reads the stream; a lease it renews, gone seconds after it dies |
| reelflow:stream:{name}:status | hash | state, reconnects, gaps, dropped, last segment, latency; written by the owner |
| reelflow:stream:{name}:results | stream | one entry per segment (field `result`: JSON), capped |
| reelflow:stream:{name}:events | stream | label enter/exit events (field `event`: JSON), capped |
| reelflow:sinks | hash | sink id -> the sink (JSON: url, global), every sink a job, stream or stack named |
| reelflow:sink:{id}:outbox | stream | messages the sink has still to deliver (field `m`: JSON; `live`: 1 for streams'), oldest first |
| reelflow:sink:{id}:status | hash | delivered, dead-lettered, dropped (live, over the backlog), last error, retrying since |
| reelflow:sink:{id}:lease | string | the worker delivering to the sink (one at a time: in order); a lease it renews |
| reelflow:sinks:dlq | hash | dead-letter id -> a batch a sink gave up on (sink, reason, when, its messages) |
| reelflow:index:outbox | stream | segments waiting for the vector index (fields `row`, `v`: the embedding) or a job's deletion (`delete`); consumer group `indexers` |
| reelflow:index:status | hash | segments indexed, and dropped (the outbox was at REELFLOW_INDEX_BACKLOG) |
| reelflow:index:deleted | sorted set | jobs whose vectors were deleted, by when (a day): late repeats are not indexed |
| reelflow:index:maintainer | string | the worker training and sweeping the index now; a lease |
| reelflow:clips | sorted set | evidence clips of live streams by id, scored by when they start |
| reelflow:clip:ID | string | a clip's record (JSON: stream, label, path, start, duration, state, reason); expires with the clip |
"""

PREFIX = "reelflow"
JOBS_STREAM = f"{PREFIX}:jobs"
CONSUMER_GROUP = "workers"
JOBS_INDEX = f"{PREFIX}:jobs:index"
RESULTS = f"{PREFIX}:results"
RETRIES = f"{PREFIX}:retries"
DEAD_LETTERS = f"{PREFIX}:dlq"
WORKERS = f"{PREFIX}:workers"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def segments(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:segments"


def idempotency(key: str) -> str:
    return f"{PREFIX}:idempotency:{key}"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


STREAMS = f"{PREFIX}:streams"


def stream_owner(name: str) -> str:
    return f"{PREFIX}:stream:{name}:owner"


def stream_status(name: str) -> str:
    return f"{PREFIX}:stream:{name}:status"


def stream_results(name: str) -> str:
    return f"{PREFIX}:stream:{name}:results"


def stream_events(name: str) -> str:
    return f"{PREFIX}:stream:{name}:events"


SINKS = f"{PREFIX}:sinks"
SINK_DEAD_LETTERS = f"{PREFIX}:sinks:dlq"


def sink_outbox(sink_id: str) -> str:
    return f"{PREFIX}:sink:{sink_id}:outbox"


def sink_status(sink_id: str) -> str:
    return f"{PREFIX}:sink:{sink_id}:status"


def sink_lease(sink_id: str) -> str:
    return f"{PREFIX}:sink:{sink_id}:lease"


INDEX_OUTBOX = f"{PREFIX}:index:outbox"
INDEX_STATUS = f"{PREFIX}:index:status"
INDEX_DELETED = f"{PREFIX}:index:deleted"
INDEX_MAINTAINER = f"{PREFIX}:index:maintainer"

CLIPS = f"{PREFIX}:clips"


def clip(clip_id: str) -> str:
    return f"{PREFIX}:clip:{clip_id}"
