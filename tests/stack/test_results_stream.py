"""The results stream `reelflow:results` (issue 18, part 1) against a real redis-server: every stored
segment once, every job's end, readable by a consumer group of the reader's own; and following a
job's segments as they are stored."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from services.settings import Settings
from services.store import keys
from services.store.jobs import JobSpec
from services.store.queue import JobQueue, LeaseLost
from services.store.results import END, SEGMENT, ResultsStream, follow_job


@pytest.fixture
def queue(redis_server_url):
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    settings = Settings(lease_s=0.5, max_attempts=1, retry_base_s=0.05, result_ttl_s=3600)
    return JobQueue(client, settings)


def _segment(i: int) -> str:
    return json.dumps({"index": i, "labels": ["a", "b"], "scores": [0.6, 0.4], "embedding_b64": "AAAA" * 400})


def _claim(queue: JobQueue):
    job_id, _ = queue.submit(JobSpec(source="/videos/a.mp4"))
    [claim] = queue.claim(count=1, block_ms=100, consumer="w1")
    assert claim.job_id == job_id
    return claim


def _entries(queue: JobQueue) -> list:
    return ResultsStream(queue.r).read("0-0", count=10_000)


def test_each_stored_segment_is_appended_once_without_its_embedding_then_the_end(queue):
    claim = _claim(queue)
    queue.set_total(claim.job_id, 3)
    for i in (0, 1, 1, 2):  # index 1 stored twice: the second store is refused, and not appended
        queue.store_segment(claim, i, _segment(i))
    assert queue.complete(claim)
    entries = _entries(queue)
    assert [(e.kind, e.job_id, e.index) for e in entries] == [(SEGMENT, claim.job_id, i) for i in range(3)] + [
        (END, claim.job_id, None)]
    assert entries[0].result == {"index": 0, "labels": ["a", "b"], "scores": [0.6, 0.4]}  # no embedding
    assert entries[-1].state == "done"
    assert "embedding_b64" in queue.segments(claim.job_id)[0]  # the job's own results keep it


def test_a_refused_store_appends_nothing_and_failed_and_cancelled_jobs_end_on_the_stream(queue):
    claim = _claim(queue)
    queue.store_segment(claim, 0, _segment(0))
    assert queue.cancel(claim.job_id).value == "cancelled"
    with pytest.raises(LeaseLost):
        queue.store_segment(claim, 1, _segment(1))  # the cancelled job's worker, too late
    failing = _claim(queue)
    queue.fail(failing, "not a video")
    entries = _entries(queue)
    assert [(e.kind, e.job_id, e.index, e.state) for e in entries] == [
        (SEGMENT, claim.job_id, 0, None), (END, claim.job_id, None, "cancelled"), (END, failing.job_id, None, "failed")]
    assert entries[-1].error == "not a video"
    assert queue.cancel(claim.job_id).value == "cancelled" and len(_entries(queue)) == 3  # ended once


def test_a_consumer_group_of_its_own_reads_it_as_the_readme_shows(queue):
    queue.r.xgroup_create(keys.RESULTS, "billing", id="$", mkstream=True)  # XGROUP CREATE reelflow:results billing $
    claim = _claim(queue)
    queue.set_total(claim.job_id, 2)
    for i in range(2):
        queue.store_segment(claim, i, _segment(i))
    queue.complete(claim)
    [(_, entries)] = queue.r.xreadgroup("billing", "worker-1", {keys.RESULTS: ">"}, count=100)
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
    assert [f["kind"] for f in fields] == ["segment", "segment", "end"]
    assert json.loads(fields[1]["result"])["index"] == 1 and fields[2]["state"] == "done"


def test_the_stream_is_capped(queue):
    capped = JobQueue(queue.r, queue.settings.replace(results_stream_max=100))
    claim = _claim(capped)
    for i in range(1000):
        capped.store_segment(claim, i, _segment(i))
    assert 100 <= queue.r.xlen(keys.RESULTS) < 1000  # trimmed to about the cap (in whole radix-tree nodes)


def test_following_a_job_gives_each_segment_once_in_order_whole_and_ends_with_the_job(queue, redis_server_url):
    claim = _claim(queue)
    queue.set_total(claim.job_id, 6)
    for i in range(2):
        queue.store_segment(claim, i, _segment(i))

    def work():  # the rest, while the follower waits; another job's segments in between
        other = JobQueue(redis.Redis.from_url(redis_server_url), queue.settings)
        other.submit(JobSpec(source="/videos/b.mp4"))
        [second] = other.claim(count=1, block_ms=1000, consumer="w2")
        time.sleep(0.3)
        for i in range(2, 6):
            other.store_segment(claim, i, _segment(i))
            other.store_segment(second, i, _segment(i))
            time.sleep(0.05)
        other.complete(claim)

    thread = threading.Thread(target=work)
    thread.start()
    followed = list(follow_job(queue, claim.job_id, block_ms=200))
    thread.join()
    assert [s["index"] for s in followed] == list(range(6))
    assert all("embedding_b64" in s for s in followed)  # whole, as `results` prints them


def test_following_an_ended_job_prints_what_it_stored_and_returns(queue):
    claim = _claim(queue)
    queue.store_segment(claim, 0, _segment(0))
    queue.cancel(claim.job_id)
    started = time.monotonic()
    assert [s["index"] for s in follow_job(queue, claim.job_id, block_ms=5000)] == [0]
    assert time.monotonic() - started < 1


def test_submit_wait_wakes_on_a_jobs_end_and_still_ends_when_the_stream_was_trimmed(queue):
    from services.cli.jobs import wait_for

    claim = _claim(queue)
    queue.set_total(claim.job_id, 1)
    queue.store_segment(claim, 0, _segment(0))
    ended_at = []

    def end_soon():
        time.sleep(1.05)  # while wait_for blocks on the stream, just after one of its half-second reads
        ended_at.append(time.monotonic())
        queue.complete(claim)

    threading.Thread(target=end_soon, daemon=True).start()
    assert wait_for(queue, [claim.job_id], json_output=True)
    assert time.monotonic() - ended_at[0] < 0.3  # woken by the end's entry, not by the next read (at 1.5 s)

    failed = _claim(queue)
    queue.r.xtrim(keys.RESULTS, maxlen=0)
    queue.fail(failed, "bad video")
    queue.r.xtrim(keys.RESULTS, maxlen=0)  # its end gone from the stream: the records still say it
    assert not wait_for(queue, [failed.job_id], json_output=True)
