"""The job worker with a real Redis and real videos: results equal `classify`, bad jobs dead-letter,
cancel stops a running job, a reclaimed job resumes after its stored segments."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from pipelines import ActionClassifier
from pipelines.synthetic import make_video
from services.store.embedded import EmbeddedRedis
from services.store.jobs import JobSpec, JobState
from services.store.queue import JobQueue
from services.settings import Settings
from services.worker.consumer import Worker
from services.worker.in_process import InProcessPipeline


def minute_video(video_dir):
    path = video_dir / "one_minute.mp4"
    if not path.exists():
        make_video(path, seconds=60, fps=30, size=(320, 240))
    return path


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("worker-home"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture
def queue(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    settings = Settings(redis_url=redis_url, lease_s=1.0, max_attempts=3, retry_base_s=0.05,
                        result_ttl_s=3600)
    return JobQueue(client, settings)


def test_a_job_gives_the_same_segments_as_classify(queue, clip_10s):
    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none", topk=3))
    assert Worker(queue, InProcessPipeline(), consumer="w1").run_until_idle() == 1
    record = queue.record(job_id)
    assert (record.state, record.segments_done, record.segments_total) == (JobState.DONE, 7, 7)
    stored = queue.segments(job_id)
    expected = ActionClassifier("x3d_xs", weights="none", topk=3).classify_video(clip_10s)
    assert [s["index"] for s in stored] == list(range(7))
    for got, want in zip(stored, expected):
        assert (got["start_s"], got["end_s"], got["labels"]) == (want.start_s, want.end_s, want.labels)
        assert got["scores"] == pytest.approx(want.scores, rel=1e-5)
        assert got["job_id"] == job_id and got["embedding_dim"] == 2048


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: p.write_bytes(b""), "as video"),
        (lambda p: p.write_text("hello\n" * 50), "as video"),
        (lambda p: None, "no such file"),
    ],
    ids=["zero-bytes", "text", "missing"],
)
def test_bad_jobs_fail_into_the_dead_letter_list_and_the_worker_carries_on(queue, tmp_path, clip_10s, make, error):
    bad = tmp_path / "bad.mp4"
    make(bad)
    bad_id, _ = queue.submit(JobSpec(source=str(bad), weights="none"))
    good_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
    Worker(queue, InProcessPipeline(), consumer="w1").run_until_idle()
    assert queue.state(bad_id) == JobState.FAILED and error in queue.record(bad_id).error
    assert [d["job_id"] for d in queue.dead_letters()] == [bad_id]
    assert queue.state(good_id) == JobState.DONE


def test_truncated_video_fails_with_a_clear_error(queue, tmp_path, clip_10s):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip_10s.read_bytes()[:20000])
    job_id, _ = queue.submit(JobSpec(source=str(truncated), weights="none"))
    Worker(queue, InProcessPipeline(), consumer="w1").run_until_idle()
    record = queue.record(job_id)
    assert record.state == JobState.FAILED and "\n" not in record.error and record.error


def test_a_reclaimed_job_resumes_after_its_stored_segments(queue, clip_10s):
    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
    [lost] = queue.claim(1, 100, "died")  # a worker took it, stored two segments, and died
    for index in (0, 1):
        queue.store_segment(lost, index, json.dumps({"index": index, "stored_by": "died"}))
    time.sleep(1.1)  # its lease runs out
    Worker(queue, InProcessPipeline(), consumer="w2").run_until_idle()
    stored = queue.segments(job_id)
    assert queue.state(job_id) == JobState.DONE
    assert [s["index"] for s in stored] == list(range(7))
    assert [s.get("stored_by") for s in stored[:2]] == ["died", "died"]  # not recomputed
    assert all("labels" in s for s in stored[2:])
    assert queue.record(job_id).attempts == 2


def test_cancel_stops_a_running_job(queue, video_dir):
    long_video = minute_video(video_dir)
    job_id, _ = queue.submit(JobSpec(source=str(long_video), weights="none"))
    worker = Worker(queue, InProcessPipeline(), consumer="w1")
    thread = threading.Thread(target=worker.run_until_idle)
    thread.start()
    while queue.record(job_id).segments_done < 2:
        time.sleep(0.05)
    queue.cancel(job_id)
    thread.join(timeout=60)
    record = queue.record(job_id)
    assert not thread.is_alive()
    assert record.state == JobState.CANCELLED and record.segments_done < record.segments_total


def test_a_stopping_worker_hands_its_job_back(queue, video_dir):
    long_video = minute_video(video_dir)
    job_id, _ = queue.submit(JobSpec(source=str(long_video), weights="none"))
    worker = Worker(queue, InProcessPipeline(), consumer="w1")
    thread = threading.Thread(target=worker.run, kwargs={"block_ms": 100})
    thread.start()
    while queue.record(job_id).segments_done < 1:
        time.sleep(0.05)
    worker.stop.set()
    thread.join(timeout=60)
    record = queue.record(job_id)
    assert record.state == JobState.QUEUED and record.attempts == 0
    Worker(queue, InProcessPipeline(), consumer="w2").run_until_idle()
    assert queue.state(job_id) == JobState.DONE
    assert [s["index"] for s in queue.segments(job_id)] == list(range(record.segments_total))


def test_a_source_outside_the_allowed_roots_fails(queue, clip_10s, tmp_path):
    from pipelines.sources import SourcePolicy


    pipeline = InProcessPipeline(sources=SourcePolicy(allowed_roots=(tmp_path.resolve(),)))
    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
    Worker(queue, pipeline, consumer="w1").run_until_idle()
    record = queue.record(job_id)
    assert record.state == JobState.FAILED and "outside the allowed roots" in record.error
