"""Every Redis key reelflow uses. Nothing else names a key.

| key | type | holds |
|---|---|---|
| reelflow:jobs | stream | job deliveries; consumer group `workers`. Entries only deliver: the job record is the truth |
| reelflow:job:{id} | hash | the job record: state, spec, attempts, segments_done/total, error, timestamps |
| reelflow:job:{id}:segments | hash | segment index -> result JSON, written once per index (HSETNX) |
| reelflow:jobs:index | sorted set | job ids by submit time, for listings |
| reelflow:idempotency:{key} | string | the job id a submit with that idempotency key created |
| reelflow:retries | sorted set | job ids waiting for a retry, scored by due time |
| reelflow:dlq | hash | job id -> dead-letter entry (error, when, the message) |
| reelflow:workers | hash | consumer name -> what the worker serves (JSON), for every worker seen |
| reelflow:worker:{name} | string | presence: exists while the worker beats; expires seconds after it dies |
"""

PREFIX = "reelflow"
JOBS_STREAM = f"{PREFIX}:jobs"
CONSUMER_GROUP = "workers"
JOBS_INDEX = f"{PREFIX}:jobs:index"
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
