"""reelflow as one Ray Serve application: the HTTP API, the job consumer, and a replica per model.

    Api (FastAPI ingress, /v1) ── Redis ── JobConsumer (claims jobs and streams) ──> ModelReplica-<model> (batched)

`build` is the import path for `serve run`, `serve build`, `serve deploy` and KubeRay's RayService
(see k8s/serve-config.yaml); settings come from the REELFLOW_* environment of the Ray processes:

    $ REELFLOW_REDIS_URL=redis://:PASSWORD@redis:6379/0 serve run services.app:build models=x3d_xs weights=none

Model replicas scale with their ongoing requests and the job backlog (`services.autoscale`); the
consumer takes as many jobs at once as the running replicas can work on, so the backlog stays in
Redis and nothing is lost when a replica or node goes. `reelflow up --http-port` serves the same
`Api` next to its own consumer.
"""

from __future__ import annotations

import logging
import threading

from ray import serve

from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS
from services.api import api, configure

log = logging.getLogger("reelflow.app")


def replica_name(model: str) -> str:
    from pipelines.models import model_slug

    return f"ModelReplica-{model_slug(model)}"


# Server-sent events hold a request open for as long as a page follows a stream: Serve's default
# of 5 ongoing requests per replica would lock the API after five dashboards.
@serve.deployment(name="Api", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Api:
    """The HTTP API; `redis_url` overrides the environment's (the embedded Redis of `reelflow up`)."""

    def __init__(self, redis_url: str | None = None, consumer=None):
        from services.stack import connect
        from services.settings import Settings

        settings = Settings.from_env()
        if redis_url:
            settings = Settings(**{**settings.__dict__, "redis_url": redis_url})
        configure(connect(settings), settings)
        self.consumer = consumer  # bound so that the consumer is part of the application


@serve.deployment(name="JobConsumer", num_replicas=1, ray_actor_options={"num_cpus": 0.1})
class JobConsumer:
    """Claims jobs and live streams from Redis and runs them on this application's model replicas."""

    def __init__(self, replicas: dict, weights: str):
        from services.embedded_redis import EmbeddedRedis
        from services.ray_pipeline import RayPipeline, Target
        from services.settings import Settings
        from services.stack import connect
        from services.stream_manager import StreamManager
        from services.stream_registry import StreamRegistry
        from services.worker import Worker

        settings = Settings.from_env()
        queue = connect(settings)
        # the bound model replicas arrive as handles: the consumer reaches them by app and deployment name
        served = {(model, weights): Target(h.app_name, h.deployment_name) for model, h in replicas.items()}
        self.pipeline = RayPipeline(settings, served=served)
        self.pipeline.start()
        self.worker = Worker(queue, self.pipeline)
        url = settings.redis_url or EmbeddedRedis(settings.home).url()
        self.streams = StreamManager(StreamRegistry(queue.r), self.worker.consumer, self.pipeline, url,
                                     settings.max_streams).start()
        self.thread = threading.Thread(target=self.worker.run, daemon=True, name="reelflow-consumer")
        self.thread.start()

    def check_health(self) -> None:
        if not self.thread.is_alive():  # Serve restarts an unhealthy replica; its jobs are reclaimed
            raise RuntimeError("the job consumer thread has stopped")

    def __del__(self):
        if hasattr(self, "worker"):
            self.worker.stop.set()
            self.streams.close()


def build(args: dict | None = None):
    """The application: `args` may name `models` (a list, or comma-separated) and `weights`."""
    from services.ray_pipeline import replica_deployment, replica_options
    from services.settings import Settings

    args = dict(args or {})
    models = args.pop("models", [DEFAULT_MODEL])
    models = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    weights = args.pop("weights", DEFAULT_WEIGHTS)
    device = args.pop("device", "cpu")
    if args:
        raise ValueError(f"unknown application arguments {sorted(args)}; use models, weights, device")
    from pipelines.models import model_name

    models = [model_name(m) for m in models]  # UnknownModelError (a ValueError) names the choices
    settings = Settings.from_env()
    replicas = {m: replica_deployment(settings, name=replica_name(m)).bind(m, weights, **replica_options(settings, device))
                for m in models}
    consumer = JobConsumer.bind(replicas, weights)
    return Api.bind(consumer=consumer)
