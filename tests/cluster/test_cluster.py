"""A Ray cluster of several nodes (ray.cluster_utils.Cluster): losing a node mid-run loses no job,
duplicates no segment, and leaves no stream without a host."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import redis

from services.store.embedded import EmbeddedRedis
from services.store.jobs import JobSpec, JobState
from services.ray_backend.pipeline import RayPipeline
from services.store.queue import JobQueue
from services.store.streams import StreamSpec
from services.worker.consumer import Worker
from services.worker.runtime import Runtime
from support.stack_process import fast_settings


@pytest.mark.slow
def test_losing_a_node_mid_run(tmp_path, clip_10s, monkeypatch):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    # split: decoder actors spread over both nodes, so the lost node takes a decoder mid-job with it
    settings = fast_settings(url, tmp_path, lease_s=3.0, max_attempts=4, batch_size=4, decoders=2,
                             decoder_cpus=0.25, replica_cpus=0.25, max_replicas=1, deploy_timeout_s=120,
                             pipeline="split")
    pipeline = RayPipeline(settings)
    try:
        pipeline.start()
        pipeline.prepare("x3d_xs", "none")
        nodes = {ray.get(d.node.remote()) for d in pipeline.decoders}
        assert worker_node.node_id in nodes, "a decoder should run on the second node (SPREAD)"
        queue = JobQueue(redis.Redis.from_url(url), settings)
        job_ids = [queue.submit(JobSpec(source=str(clip_10s), weights="none"))[0] for _ in range(6)]
        worker = Worker(queue, pipeline, consumer="cluster-test")
        thread = threading.Thread(target=worker.run_until_idle, kwargs={"block_ms": 500})
        thread.start()
        deadline = time.monotonic() + 120
        while sum(queue.record(j).segments_done for j in job_ids) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cluster.remove_node(worker_node)  # the node dies with its decoder (and whatever else ran there)
        thread.join(timeout=300)
        assert not thread.is_alive()
        for job_id in job_ids:
            record = queue.record(job_id)
            assert record.state == JobState.DONE, record
            assert [s["index"] for s in queue.segments(job_id)] == list(range(7))
        # the job whose decoder died with the node was retried and resumed
        assert sum(queue.record(j).attempts for j in job_ids) > len(job_ids)
    finally:
        pipeline.shutdown()
        cluster.shutdown()
        embedded.stop()


@pytest.mark.slow
def test_a_stream_host_on_a_lost_node_comes_back_on_another(tmp_path, clip_10s, monkeypatch):
    """Issue 17, part 2 on a cluster: the node running the streams' host dies; Ray restarts the host
    on another node, the worker's stream manager restarts the stream on it, and the stream goes on
    publishing with no window index twice."""
    from ray.cluster_utils import Cluster
    from ray.util.state import get_actor

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]  # the host fits on these only (stream_cpus)
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    embedded = EmbeddedRedis(tmp_path)
    url = embedded.start()
    settings = fast_settings(url, tmp_path, lease_s=3.0, stream_cpus=1.5, replica_cpus=0.25, max_replicas=1,
                             deploy_timeout_s=120, allowed_roots="/")
    pipeline = RayPipeline(settings)
    runtime = None
    try:
        pipeline.start()
        queue = JobQueue(redis.Redis.from_url(url), settings)
        registry = queue.stream_registry()
        registry.register(StreamSpec(name="cam", url=str(clip_10s), weights="none"))  # a file played live, looping
        runtime = Runtime(queue, pipeline, url, settings, consumer="cluster-streams").start(block_ms=500)

        def indices() -> list[int]:
            return [r["index"] for _, r in registry.recent("cam", 10_000)]

        _wait(lambda: len(indices()) >= 2, 180, "the stream published nothing")
        node_of = lambda: get_actor(pipeline._stream_host._actor_id.hex()).node_id  # noqa: E731
        lost = next(n for n in workers if n.node_id == node_of())
        before = len(indices())
        cluster.remove_node(lost)  # the host dies with its node
        _wait(lambda: len(indices()) >= before + 3, 240, "the stream did not come back")
        assert node_of() not in (lost.node_id, cluster.head_node.node_id)  # restarted on the other worker node
        published = indices()
        assert published == sorted(set(published)), published  # no window twice
        assert registry.owner("cam").startswith("cluster-streams")  # still this worker's stream
    finally:
        if runtime is not None:
            runtime.close()
        pipeline.shutdown()
        cluster.shutdown()
        embedded.stop()


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
