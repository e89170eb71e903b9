"""Traces from submit to publish: the worker's spans join the submitter's trace through the job
message, across a real Redis."""

from __future__ import annotations

import argparse
import json

import pytest
import redis
from support.spans import in_memory_spans

from services.cli.jobs import submit_sources
from services.store.embedded import EmbeddedRedis
from services.store.queue import JobQueue
from services.settings import Settings
from services.worker.consumer import Worker
from services.worker.in_process import InProcessPipeline


@pytest.fixture(scope="module")
def spans():
    return in_memory_spans()


def test_the_job_and_its_segments_join_the_submitters_trace(spans, tmp_path, clip_10s):
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    try:
        settings = Settings(redis_url=url, home=tmp_path, lease_s=5, max_attempts=3, retry_base_s=0.1, result_ttl_s=60)
        queue = JobQueue(redis.Redis.from_url(url), settings)
        args = argparse.Namespace(sources=[str(clip_10s)], model="x3d_xs", weights="none", topk=5, stride=None,
                                  no_embeddings=True, idempotency_key=None, json=True)
        [(job_id, _, _)], refused = submit_sources(queue, args)
        assert refused == 0 and queue.record(job_id).spec.trace["traceparent"]
        Worker(queue, InProcessPipeline(), consumer="traced").run_until_idle()
    finally:
        embedded.stop()
    finished = spans.get_finished_spans()
    submit = [s for s in finished if s.name == "reelflow.submit"][-1]
    job = [s for s in finished if s.name == "reelflow.job" and s.attributes["reelflow.job_id"] == job_id][-1]
    publish = [s for s in finished if s.name == "reelflow.store" and s.parent.span_id == job.context.span_id]
    assert job.context.trace_id == submit.context.trace_id
    assert job.parent.span_id == submit.context.span_id
    assert sorted(s.attributes["reelflow.segment"] for s in publish) == list(range(7))


@pytest.mark.slow  # a Ray stack: `make test-slow`
@pytest.mark.parametrize("pipeline", ["fused", "split"])
def test_on_ray_each_segments_decode_transform_model_batch_and_store_are_children_of_the_job(
        tmp_path, video_dir, pipeline):
    """Spans from the replica (or decoder actor) reach a real OTLP endpoint and hang under the job's
    span, which hangs under the client's submit span: one trace across three processes."""
    from support.receivers import OtlpReceiver
    from support.stack_process import UpProcess, run, stack_env, wait_until
    from pipelines.synthetic import make_video

    video = video_dir / f"traced_{pipeline}.mp4"
    make_video(video, seconds=6.0, fps=15, size=(160, 120))
    with OtlpReceiver() as otlp:
        env = stack_env(tmp_path / "home", REELFLOW_PIPELINE=pipeline, OTEL_TRACES_EXPORTER="otlp",
                        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="500")
        up = UpProcess(tmp_path / "home", env, "--weights", "none", ready_within=180)
        try:
            job_id = run(env, "submit", video, "--weights", "none", "--wait", "--json").stdout
            job_id = json.loads(job_id.splitlines()[0])["job_id"]
            segments = 4  # 6 s at x3d_xs's 2 s clips (stride 1.6 s)

            def traced():
                jobs = [s for s in otlp.spans("reelflow.job") if s["attributes"]["reelflow.job_id"] == job_id]
                if not jobs:
                    return None
                children = [s for s in otlp.spans() if s["parent_id"] == jobs[0]["span_id"]]
                names = [s["name"] for s in children]
                ready = all(names.count(n) >= segments for n in
                            ("reelflow.decode", "reelflow.transform", "reelflow.model_batch", "reelflow.store"))
                return (jobs[0], children) if ready else None

            job, children = wait_until(traced, 60, "the spans of each segment did not reach the collector", up)
        finally:
            up.stop()
    [submit] = [s for s in otlp.spans("reelflow.submit") if s["span_id"] == job["parent_id"]]
    assert submit["service"] == "reelflow-client" and job["service"] == "reelflow-worker"
    assert {s["trace_id"] for s in children} == {submit["trace_id"]}
    by_name: dict[str, list] = {}
    for span in children:
        by_name.setdefault(span["name"], []).append(span)
    actor = "reelflow-replica" if pipeline == "fused" else "reelflow-decoder"
    assert {s["service"] for s in by_name["reelflow.decode"] + by_name["reelflow.transform"]} == {actor}
    assert {s["service"] for s in by_name["reelflow.model_batch"]} == {"reelflow-replica"}
    for name in ("reelflow.decode", "reelflow.transform", "reelflow.model_batch", "reelflow.store"):
        assert sorted(s["attributes"]["reelflow.segment"] for s in by_name[name]) == list(range(segments)), name
    for span in by_name["reelflow.model_batch"]:
        assert 1 <= span["attributes"]["reelflow.batch_size"] <= 16 and span["attributes"]["reelflow.model"] == "x3d_xs"
    for name in ("reelflow.decode", "reelflow.transform", "reelflow.model_batch"):  # they happened inside the job
        assert all(job["start_ns"] <= s["start_ns"] <= s["end_ns"] <= job["end_ns"] for s in by_name[name]), name
