"""Everything that imports Ray: the Ray pipeline (decoder actors, Serve model replicas and their
batcher, fused jobs, the ordered in-flight loop), live streams on a Ray actor, the backlog
autoscaling policy and the Serve application (`services.app:build`).

The rest of reelflow reaches it through one factory, `start_pipeline`, which returns a
`services.worker.pipeline.Pipeline`. Importing this package does not import Ray; the factory does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.settings import Settings
    from services.worker.pipeline import Pipeline


def start_pipeline(settings: Settings, device: str = "cpu", http: tuple[str, int] | None = None,
                   redis_url: str | None = None) -> Pipeline:
    """Join (or start) Ray and Serve and return the pipeline; `http` (host, port): also serve the HTTP
    API there on Serve's proxy, reading the Redis at `redis_url`."""
    from services.ray_backend.pipeline import RayPipeline  # Ray loads here, and only here

    pipeline = RayPipeline(settings, device=device)
    try:
        pipeline.start(http=http)
        if http:
            pipeline.serve_api(redis_url, http)
    except BaseException:
        pipeline.shutdown()
        raise
    return pipeline
