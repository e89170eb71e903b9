"""The HTTP API (`/v1`) and the live dashboard at `/`: a FastAPI app that talks only to Redis
(`services.store`). Served by Ray Serve (`services.ray_backend.http`) or, without Ray, by uvicorn
on a thread (`services.api.server`).

    >>> from services.api import api, configure        # doctest: +SKIP
    >>> configure(queue, settings)                      # once per process, before serving
"""

from services.api.deps import configure
from services.api.routes import api

__all__ = ["api", "configure"]
