"""The Ray pipeline under faults: kill -9 of a decoder actor or a model replica mid-job loses
nothing and duplicates nothing; a model that cannot load fails its jobs with a clear error."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import ray
import redis
from ray import serve

from pipelines.synthetic import make_video
from services.store.embedded import EmbeddedRedis
from services.store.jobs import JobSpec, JobState
from services.store.queue import JobQueue
from services.ray_backend.pipeline import REPLICA, RayPipeline, app_name
from support.stack_process import fast_settings
from services.worker.consumer import Worker

# Ray clusters under faults, about 2 minutes: `make test` stays under 15 minutes (21 min before)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("ray-home")
    embedded = EmbeddedRedis(home)
    url = embedded.start()
    # split: decoder actors are started, so both pipelines can be tested on the same replicas
    settings = fast_settings(url, home, lease_s=3.0, batch_size=4, max_replicas=1, deploy_timeout_s=120,
                             pipeline="split")
    pipeline = RayPipeline(settings)
    pipeline.start()
    pipeline.prepare("x3d_xs", "none")
    yield pipeline
    pipeline.shutdown()
    embedded.stop()


@pytest.fixture(params=["split", "fused"])
def mode(request, pipeline):
    """Run the test with decoder actors feeding the replicas, then with replicas decoding themselves."""
    pipeline.mode = request.param
    yield request.param
    pipeline.mode = "split"


@pytest.fixture
def queue(pipeline):
    client = redis.Redis.from_url(pipeline.settings.redis_url)
    client.flushall()
    return JobQueue(client, pipeline.settings)


@pytest.fixture(scope="module")
def long_video(video_dir):
    path = video_dir / "ray_long.mp4"
    make_video(path, seconds=40, fps=30, size=(320, 240))
    return path


def run_and_kill(queue, pipeline, video, kill):
    job_id, _ = queue.submit(JobSpec(source=str(video), weights="none"))
    worker = Worker(queue, pipeline, consumer="ray-test")
    thread = threading.Thread(target=worker.run_until_idle, kwargs={"block_ms": 500})
    thread.start()
    deadline = time.monotonic() + 60
    while queue.record(job_id).segments_done < 3:
        assert time.monotonic() < deadline, queue.record(job_id)
        time.sleep(0.05)
    kill()
    thread.join(timeout=180)
    assert not thread.is_alive()
    return job_id


def assert_complete_exactly_once(queue, job_id, total):
    record = queue.record(job_id)
    assert record.state == JobState.DONE, record
    segments = queue.segments(job_id)
    assert [s["index"] for s in segments] == list(range(total))
    assert all(len(s["labels"]) == 5 for s in segments)
    return record


def test_a_decoder_killed_mid_job(queue, pipeline, long_video):
    pid = ray.get(pipeline.decoders[0].pid.remote())
    job_id = run_and_kill(queue, pipeline, long_video, lambda: os.kill(pid, signal.SIGKILL))
    record = assert_complete_exactly_once(queue, job_id, 25)
    assert record.attempts == 2  # the retry resumed it
    assert ray.get(pipeline.decoders[0].pid.remote()) != pid  # Ray restarted the actor


def test_a_model_replica_killed_mid_job(queue, pipeline, long_video, mode):
    handle = serve.get_deployment_handle(REPLICA, app_name=app_name("x3d_xs", "none", pipeline.settings))
    pid = handle.pid.remote().result()
    job_id = run_and_kill(queue, pipeline, long_video, lambda: os.kill(pid, signal.SIGKILL))
    assert_complete_exactly_once(queue, job_id, 25)
    assert handle.pid.remote().result() != pid  # Serve replaced the replica


def test_results_match_and_batches_fill(queue, pipeline, clip_10s, mode):
    from pipelines import ActionClassifier

    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
    Worker(queue, pipeline, consumer="ray-test").run_until_idle()
    segments = queue.segments(job_id)
    expected = ActionClassifier("x3d_xs", weights="none").classify_video(clip_10s)
    assert [s["labels"] for s in segments] == [e.labels for e in expected]
    for got, want in zip(segments, expected):
        assert got["scores"] == pytest.approx(want.scores, rel=1e-4)
    counts = pipeline.batch_size_counts("x3d_xs", "none")
    assert sum(counts.values()) > 0 and max(counts) <= 4


def test_uint8_clips_finished_on_the_replica_give_the_same_results(queue, pipeline, clip_10s):
    """The GPU wire format (uint8 crop taps, blended and normalized on the replica), run on the CPU."""
    float_job, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
    Worker(queue, pipeline, consumer="ray-test").run_until_idle()
    float32 = pipeline.settings
    pipeline.settings = float32.replace(clip_format="uint8")
    target = None
    try:
        target = pipeline.prepare("x3d_xs", "none")
        assert target.handle().describe.remote().result()["clip_format"] == "uint8"
        uint8_job, _ = queue.submit(JobSpec(source=str(clip_10s), weights="none"))
        Worker(queue, pipeline, consumer="ray-test").run_until_idle()
    finally:
        pipeline.settings = float32
        if target is not None:  # prepare() may fail (replicas not up in time): its own error is the one to see
            serve.delete(target.app)
            pipeline._apps.pop(target)
    got, want = queue.segments(uint8_job), queue.segments(float_job)
    assert [s["labels"] for s in got] == [s["labels"] for s in want] and len(got) == 7
    for a, b in zip(got, want):
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-6)


def test_missing_weights_fail_the_job_before_any_deploy(queue, pipeline, clip_10s):
    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights="/no/such/checkpoint.pyth"))
    Worker(queue, pipeline, consumer="ray-test").run_until_idle()
    record = queue.record(job_id)
    assert record.state == JobState.FAILED and "is not a file" in record.error


def test_replicas_that_cannot_load_fail_the_job_instead_of_hanging(queue, pipeline, clip_10s, tmp_path):
    from support.checkpoint_files import write_checkpoint
    from pipelines.models import get_spec
    from pipelines.models.weights import build_model

    other, _ = build_model(get_spec("x3d_l"), "none")
    wrong = write_checkpoint(other, tmp_path / "x3d_l.pyth")
    job_id, _ = queue.submit(JobSpec(source=str(clip_10s), weights=str(wrong)))
    Worker(queue, pipeline, consumer="ray-test").run_until_idle()
    record = queue.record(job_id)
    assert record.state == JobState.FAILED
    assert "cannot start x3d_xs replicas" in record.error and "\n" not in record.error
