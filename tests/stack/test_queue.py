"""The job queue against a real redis-server (the embedded one): given / when / then."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import redis

from services.store import keys
from services.store.embedded import EmbeddedRedis, redis_server_binary
from services.store.jobs import JobSpec, JobState
from services.store.queue import JobQueue, LeaseLost, _deliver
from services.settings import Settings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    embedded = EmbeddedRedis(home)
    url = embedded.start()
    yield embedded, url
    embedded.stop()


@pytest.fixture
def client(server):
    _, url = server
    client = redis.Redis.from_url(url)
    client.flushall()
    return client


def make_queue(client, **overrides) -> JobQueue:
    settings = Settings(lease_s=0.5, max_attempts=3, retry_base_s=0.05, result_ttl_s=3600)
    return JobQueue(client, settings.replace(**overrides))


def spec(**kw) -> JobSpec:
    return JobSpec(**{"source": "/videos/a.mp4", **kw})


def finish(queue, claim, total=2):
    queue.set_total(claim.job_id, total)
    for i in range(total):
        queue.store_segment(claim, i, json.dumps({"index": i}))
    return queue.complete(claim)


def test_submit_claim_complete(client):
    q = make_queue(client)
    job_id, created = q.submit(spec())
    assert created and q.state(job_id) == JobState.QUEUED
    [claim] = q.claim(count=5, block_ms=100, consumer="w1")
    assert (claim.job_id, claim.attempt, claim.spec.source) == (job_id, 1, "/videos/a.mp4")
    assert q.state(job_id) == JobState.RUNNING
    assert finish(q, claim)
    record = q.record(job_id)
    assert (record.state, record.segments_done, record.segments_total) == (JobState.DONE, 2, 2)
    assert q.depth() == {"waiting": 0, "pending": 0, "retrying": 0}
    assert 0 < client.ttl(keys.job(job_id)) <= 3600


def test_complete_refuses_until_every_segment_is_stored(client):
    q = make_queue(client)
    q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    q.set_total(claim.job_id, 3)
    q.store_segment(claim, 0, "{}")
    assert not q.complete(claim) and q.state(claim.job_id) == JobState.RUNNING


def test_segments_are_stored_once_per_index(client):
    q = make_queue(client)
    job_id, _ = q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    assert q.store_segment(claim, 0, json.dumps({"index": 0, "v": 1}))
    assert not q.store_segment(claim, 0, json.dumps({"index": 0, "v": 2}))
    assert q.segments(job_id) == [{"index": 0, "v": 1}]
    assert q.stored_indices(job_id) == {0} and q.record(job_id).segments_done == 1


def test_idempotent_submit_returns_the_first_job(client):
    q = make_queue(client)
    first, created = q.submit(spec(idempotency_key="batch-7/a"))
    again, created_again = q.submit(spec(idempotency_key="batch-7/a"))
    assert created and not created_again and again == first
    assert len(q.claim(5, 100, "w1")) == 1


def test_a_dead_consumers_job_is_reclaimed_after_its_lease(client):
    q = make_queue(client, lease_s=0.3)
    job_id, _ = q.submit(spec())
    [lost] = q.claim(1, 100, "dies")
    q.store_segment(lost, 0, "{}")  # it got one segment done, then died
    assert q.claim(1, 50, "w2") == []  # lease still running
    time.sleep(0.4)
    [reclaimed] = q.claim(1, 50, "w2")
    assert (reclaimed.job_id, reclaimed.attempt, reclaimed.consumer) == (job_id, 2, "w2")
    assert q.stored_indices(job_id) == {0}  # resume after the stored segment
    assert not q.renew(lost)  # the old holder learns it lost the job, and cannot take it back
    assert q.renew(reclaimed)


def test_a_worker_that_lost_its_lease_changes_nothing_when_it_comes_back(client):
    """A worker cut off from Redis longer than its lease comes back: the job is another's now, and
    every write it tries is refused (LeaseLost), so no segment is stored twice and the new holder's
    delivery is neither acknowledged nor re-queued under it."""
    q = make_queue(client, lease_s=0.3)
    job_id, _ = q.submit(spec())
    [old] = q.claim(1, 100, "partitioned")
    q.set_total(job_id, 3)
    q.store_segment(old, 0, json.dumps({"index": 0, "by": "old"}))
    time.sleep(0.4)
    [new] = q.claim(1, 50, "healthy")
    assert new.token != old.token
    for write in (lambda: q.store_segment(old, 1, json.dumps({"index": 1, "by": "old"})),
                  lambda: q.retry(old, "Redis went away"), lambda: q.fail(old, "cannot read"),
                  lambda: q.complete(old)):
        with pytest.raises(LeaseLost):
            write()
    q.release(old)  # a stopping worker hands back only what is still its own: nothing here
    assert q.state(job_id) == JobState.RUNNING and q.depth() == {"waiting": 0, "pending": 1, "retrying": 0}
    assert q.stored_indices(job_id) == {0} and q.dead_letters() == []
    for index in (1, 2):
        assert q.store_segment(new, index, json.dumps({"index": index, "by": "new"}))
    assert q.complete(new) and [s["by"] for s in q.segments(job_id)] == ["old", "new", "new"]
    assert q.depth() == {"waiting": 0, "pending": 0, "retrying": 0}


def test_a_dead_workers_jobs_are_taken_when_its_presence_expires_not_after_its_lease(client):
    q = make_queue(client, lease_s=600)
    first, _ = q.submit(spec())
    second, _ = q.submit(spec(source="/videos/b.mp4"))
    q.announce("dies", {"models": []}, ttl_s=0.5)
    q.announce("lives", {"models": []}, ttl_s=60)
    [lost] = q.claim(1, 100, "dies")
    [kept] = q.claim(1, 100, "lives")
    assert [w["name"] for w in q.workers()] == ["dies", "lives"]
    assert q.claim(1, 50, "w3") == []  # both alive: nothing to take
    time.sleep(1.1)  # "dies" stops beating: its presence expires (and its entry has been idle > 1 s)
    assert [w["name"] for w in q.workers()] == ["lives"]
    [taken] = q.claim(2, 50, "w3")  # at once, though the lease has 10 minutes to run; never the live one's job
    assert (taken.job_id, taken.attempt) == (lost.job_id, 2) and kept.job_id != taken.job_id
    assert q.claim(2, 50, "w4") == []  # the first taker's claim is not stolen back by the next one
    assert not q.renew(lost) and q.renew(taken) and q.renew(kept)
    q.retire("lives")
    assert q.workers() == []


def test_renewing_keeps_a_long_job(client):
    q = make_queue(client, lease_s=0.3)
    q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    for _ in range(4):
        time.sleep(0.15)
        assert q.renew(claim)
        assert q.claim(1, 10, "w2") == []


def test_transient_faults_retry_with_backoff_then_dead_letter(client):
    q = make_queue(client, max_attempts=2, retry_base_s=0.1)
    job_id, _ = q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    assert q.retry(claim, "replica died") == JobState.QUEUED
    assert q.depth()["retrying"] == 1 and q.claim(1, 10, "w1") == []  # not before its delay
    time.sleep(0.2)
    [again] = q.claim(1, 100, "w1")
    assert again.attempt == 2
    assert q.retry(again, "replica died again") == JobState.FAILED
    record = q.record(job_id)
    assert record.state == JobState.FAILED and "gave up after 2 attempts without progress: replica died again" in record.error
    assert [d["job_id"] for d in q.dead_letters()] == [job_id]


def test_attempts_that_make_progress_do_not_count_towards_the_limit(client):
    q = make_queue(client, max_attempts=2, retry_base_s=0.01, lease_s=0.2)
    job_id, _ = q.submit(spec())
    for attempt in range(1, 6):  # five deliveries, each ending badly after one more segment
        time.sleep(0.25)
        [claim] = q.claim(1, 100, f"w{attempt}")
        assert (claim.attempt, claim.stalled) == (attempt, 1)
        q.store_segment(claim, attempt - 1, "{}")
        if attempt % 2:
            assert q.retry(claim, "replica died") == JobState.QUEUED
        # even attempts: the worker dies; its lease runs out
    time.sleep(0.25)
    [stuck] = q.claim(1, 100, "w6")  # w5 stored a segment: a fresh count; w6 stores nothing
    assert stuck.stalled == 1
    assert q.retry(stuck, "decoder crashed") == JobState.QUEUED
    time.sleep(0.1)
    [last] = q.claim(1, 100, "w7")
    assert last.stalled == 2 and q.retry(last, "decoder crashed") == JobState.FAILED
    assert "gave up after 2 attempts without progress: decoder crashed" in q.record(job_id).error


def test_a_bad_job_is_dead_lettered_and_replayed(client):
    q = make_queue(client)
    job_id, _ = q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    q.fail(claim, "cannot read '/videos/a.mp4': no such file; check the path")
    assert q.state(job_id) == JobState.FAILED
    assert q.dead_letters()[0]["error"].startswith("cannot read")
    assert q.replay(job_id) and q.dead_letters() == []
    [replayed] = q.claim(1, 100, "w1")
    assert (replayed.job_id, replayed.attempt) == (job_id, 1)


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"job": "{not json"}, "malformed job message"),
        ({"job": json.dumps({"source": "/v.mp4", "model": "resnet9000"})}, "unknown model"),
        ({"job": json.dumps({"model": "x3d_xs"})}, "source"),
        ({"source": "/v.mp4", "topk": "lots"}, "topk"),
        ({"source": "/v.mp4", "colour": "blue"}, "colour"),
        ({"job": json.dumps({"source": "/v.mp4", "schema_version": 99})}, "newer"),
    ],
)
def test_malformed_messages_go_to_the_dead_letter_list(client, fields, error):
    q = make_queue(client)
    entry_id = client.xadd(keys.JOBS_STREAM, fields).decode()
    good, _ = q.submit(spec())
    claims = q.claim(5, 100, "w1")
    assert [c.job_id for c in claims] == [good]  # the consumer carries on
    [dead] = q.dead_letters()
    assert dead["job_id"] == entry_id and error in dead["error"] and "\n" not in dead["error"]
    assert q.state(entry_id) == JobState.FAILED
    assert not q.replay(entry_id)  # nothing runnable to replay


def test_redis_cli_xadd_submits_a_job(server, client):
    embedded, _ = server
    cli = str(redis_server_binary()).replace("redis-server", "redis-cli")
    env = {**os.environ, "REDISCLI_AUTH": embedded.password_file.read_text().strip()}
    out = subprocess.run([cli, "-s", str(embedded.socket), "XADD", keys.JOBS_STREAM, "*", "source", "/videos/b.mp4",
                          "model", "x3d_s", "topk", "3", "embeddings", "false"], capture_output=True, text=True,
                         check=True, env=env)
    entry_id = out.stdout.strip()
    q = make_queue(client)
    [claim] = q.claim(1, 100, "w1")
    assert claim.job_id == entry_id
    assert (claim.spec.source, claim.spec.model, claim.spec.topk, claim.spec.embeddings) == ("/videos/b.mp4", "x3d_s", 3, False)
    assert q.record(entry_id).state == JobState.RUNNING


def test_cancel_a_queued_and_a_running_job(client):
    q = make_queue(client)
    queued, _ = q.submit(spec())
    running, _ = q.submit(spec(source="/videos/c.mp4"))
    [claim] = [c for c in q.claim(1, 100, "w1")]
    assert claim.job_id == queued  # FIFO
    assert q.cancel(running) == JobState.CANCELLED
    assert q.cancel(queued) == JobState.CANCELLED
    assert not q.renew(claim)  # the worker learns it should stop
    assert q.claim(5, 50, "w1") == []  # the cancelled queued job is never delivered
    assert q.cancel("no-such-job") is None


def test_a_second_entry_of_a_running_job_does_not_take_it_from_its_holder(client):
    """A job's message delivered twice (a submit sent again after its reply was lost): while the first
    delivery runs, the second is dropped; once the first has ended, a later one runs as usual."""
    q = make_queue(client)
    job_id, _ = q.submit(spec())
    [holder] = q.claim(1, 100, "w1")
    _deliver(client, job_id, spec())
    assert q.claim(1, 50, "w2") == []
    assert q.renew(holder) and q.depth() == {"waiting": 0, "pending": 1, "retrying": 0}
    assert q.retry(holder, "replica died") == JobState.QUEUED
    time.sleep(0.1)
    [again] = q.claim(1, 100, "w2")
    assert again.job_id == job_id and again.attempt == 2


def test_a_cancelled_job_takes_no_more_writes_from_its_worker(client):
    """A cancel ends the claim: the worker's writes are refused and the job stays cancelled (a retry
    does not bring it back, a complete or a failure does not overwrite it)."""
    q = make_queue(client)
    job_id, _ = q.submit(spec())
    [claim] = q.claim(1, 100, "w1")
    q.set_total(job_id, 1)
    assert q.cancel(job_id) == JobState.CANCELLED
    for write in (lambda: q.store_segment(claim, 0, "{}"), lambda: q.complete(claim),
                  lambda: q.retry(claim, "replica died"), lambda: q.fail(claim, "bad")):
        with pytest.raises(LeaseLost):
            write()
    assert q.state(job_id) == JobState.CANCELLED and q.stored_indices(job_id) == set() and q.dead_letters() == []


def test_jobs_survive_a_redis_restart(tmp_path):
    embedded = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(embedded.start())
    q = make_queue(client)
    job_id, _ = q.submit(spec())
    [before] = q.claim(1, 100, "w0")  # w0 stores a segment and dies with Redis
    q.store_segment(before, 0, "{}")
    embedded.stop()
    assert embedded.url() is None
    client = redis.Redis.from_url(embedded.start())
    q = make_queue(client)
    assert q.stored_indices(job_id) == {0}
    time.sleep(0.6)  # w0's lease runs out
    [claim] = q.claim(1, 100, "w1")
    assert claim.job_id == job_id
    embedded.stop()


def test_a_running_embedded_server_is_reused(server):
    embedded, url = server
    again = EmbeddedRedis(embedded.dir.parent)
    assert again.start() == url


def test_a_redis_that_came_back_without_the_stream_gets_the_group_again(client):
    """A restart that lost its last writes (or kept none) drops the stream and its group: the
    consumer makes them again instead of failing on NOGROUP, and retries re-deliver from the records."""
    queue = make_queue(client)
    job_id, _ = queue.submit(spec())
    client.delete(keys.JOBS_STREAM)  # as after such a restart
    assert queue.claim(count=1, block_ms=10, consumer="c1") == []
    queue.submit(spec(source="/videos/b.mp4"))
    [claim] = queue.claim(count=1, block_ms=100, consumer="c1")
    assert claim.spec.source == "/videos/b.mp4" and queue.state(job_id) == JobState.QUEUED
