"""The HTTP API (`services.api`) as a Ray Serve ingress deployment: on Serve's proxy for `reelflow up
--http-port` (Ray pipeline) and in the Serve application (`services.ray_backend.app`).
"""

from __future__ import annotations

from ray import serve

from services.api import api, configure
from services.settings import Settings
from services.store.connection import connect


# Server-sent events hold a request open for as long as a page follows a stream: Serve's default
# of 5 ongoing requests per replica would lock the API after five dashboards.
@serve.deployment(name="Api", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Api:
    """The HTTP API; `redis_url` overrides the environment's (the embedded Redis of `reelflow up`)."""

    def __init__(self, redis_url: str | None = None, consumer=None):
        settings = Settings.from_env(redis_url=redis_url) if redis_url else Settings.from_env()
        configure(connect(settings), settings)
        self.consumer = consumer  # bound so that the consumer is part of the application
