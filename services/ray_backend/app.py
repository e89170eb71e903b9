"""reelflow as one Ray Serve application: the HTTP API, the job consumer, and a replica per model.

    Api (FastAPI ingress, /v1) ── Redis ── JobConsumer (claims jobs and streams) ──> ModelReplica-<model> (batched)

`build` (by its public name `services.app:build`) is the import path for `serve run`, `serve build`,
`serve deploy` and KubeRay's RayService (see k8s/serve-config.yaml); settings come from the REELFLOW_* environment of the Ray processes:

    $ REELFLOW_REDIS_URL=redis://:PASSWORD@redis:6379/0 serve run services.app:build models=x3d_xs weights=none

Model replicas scale with their ongoing requests and the job backlog (`services.ray_backend.autoscale`); the
consumer takes as many jobs at once as the running replicas can work on, so the backlog stays in
Redis and nothing is lost when a replica or node goes. `reelflow up --http-port` serves the same
`Api` next to its own consumer.
"""

from __future__ import annotations

import logging

from ray import serve

from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS, model_name, model_slug
from services import metrics
from services.ray_backend.http import Api
from services.ray_backend.metrics import RayMetrics
from services.ray_backend.pipeline import RayPipeline, Target, replica_deployment, replica_options
from services.settings import Settings
from services.store.connection import connect
from services.store.embedded import EmbeddedRedis
from services.worker.runtime import Runtime

log = logging.getLogger("reelflow.app")


def replica_name(model: str) -> str:
    return f"ModelReplica-{model_slug(model)}"


@serve.deployment(name="JobConsumer", num_replicas=1, ray_actor_options={"num_cpus": 0.1})
class JobConsumer:
    """Claims jobs and live streams from Redis and runs them on this application's model replicas."""

    def __init__(self, replicas: dict, weights: str):
        metrics.use(RayMetrics())  # the consumer's, streams' and sinks' metrics, exported by this node's agent
        settings = Settings.from_env()
        queue = connect(settings)
        queue.outboxes.set_global(settings.sink_urls)  # REELFLOW_SINKS of the Ray pods
        # the bound model replicas arrive as handles: the consumer reaches them by app and deployment name
        served = {(model, weights): Target(h.app_name, h.deployment_name) for model, h in replicas.items()}
        pipeline = RayPipeline(settings, served=served)
        pipeline.start()
        url = settings.redis_url or EmbeddedRedis(settings.home).url()
        self.runtime = Runtime(queue, pipeline, url, settings).start(block_ms=1000)

    def check_health(self) -> None:
        if not self.runtime.alive():  # Serve restarts an unhealthy replica; its jobs are reclaimed
            raise RuntimeError("the job consumer thread has stopped")

    def __del__(self):
        if getattr(self, "runtime", None) is not None:  # hand the jobs and streams back now
            self.runtime.close()


def build(args: dict | None = None):
    """The application: `args` may name `models` (a list, or comma-separated) and `weights`."""
    args = dict(args or {})
    models = args.pop("models", [DEFAULT_MODEL])
    models = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    weights = args.pop("weights", DEFAULT_WEIGHTS)
    device = args.pop("device", "cpu")
    if args:
        raise ValueError(f"unknown application arguments {sorted(args)}; use models, weights, device")
    models = [model_name(m) for m in models]  # UnknownModelError (a ValueError) names the choices
    settings = Settings.from_env()
    replicas = {m: replica_deployment(settings, name=replica_name(m)).bind(m, weights, **replica_options(settings, device))
                for m in models}
    consumer = JobConsumer.bind(replicas, weights)
    return Api.bind(consumer=consumer)
