"""Traces from submit to publish: the worker's spans join the submitter's trace through the job
message, across a real Redis."""

from __future__ import annotations

import argparse

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.cli.jobs import submit_sources
from services.store.embedded import EmbeddedRedis
from services.store.queue import JobQueue
from services.settings import Settings
from services.worker.consumer import Worker
from services.worker.in_process import InProcessPipeline


@pytest.fixture(scope="module")
def spans():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


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
    publish = [s for s in finished if s.name == "reelflow.publish" and s.parent.span_id == job.context.span_id]
    assert job.context.trace_id == submit.context.trace_id
    assert job.parent.span_id == submit.context.span_id
    assert sorted(s.attributes["reelflow.segment"] for s in publish) == list(range(7))
