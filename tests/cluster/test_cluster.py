"""A two-node Ray cluster (ray.cluster_utils.Cluster): losing a node mid-run loses no job and
duplicates no segment."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import redis

from services.store.embedded import EmbeddedRedis
from services.store.jobs import JobSpec, JobState
from services.store.queue import JobQueue
from services.ray_backend.pipeline import RayPipeline
from support.stack_process import fast_settings
from services.worker.consumer import Worker


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
