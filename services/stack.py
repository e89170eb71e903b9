"""Finding (or starting) the Redis a reelflow stack runs on.

Clients and workers agree through one rule: `REELFLOW_REDIS_URL` if set, else the embedded server
under the reelflow home (`--home`, `REELFLOW_HOME`, or ~/.local/share/reelflow).
"""

from __future__ import annotations

from pathlib import Path

import redis

from pipelines.errors import ReelflowError
from services.embedded_redis import EmbeddedRedis
from services.queue import JobQueue
from services.settings import Settings


def settings_for(home: str | None) -> Settings:
    settings = Settings.from_env()
    if home:
        settings = Settings(**{**settings.__dict__, "home": Path(home).expanduser()})
    return settings


def connect(settings: Settings) -> JobQueue:
    """The queue of a running stack, or a one-line error saying how to start one."""
    url = settings.redis_url or EmbeddedRedis(settings.home).url()
    if not url:
        raise ReelflowError(f"no reelflow stack is running for home {settings.home}; start one with "
                            "`reelflow up` (or set REELFLOW_REDIS_URL)")
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise ReelflowError(f"cannot reach Redis at {redact(url)} ({e}); is the stack up?") from None
    except redis.AuthenticationError:
        raise ReelflowError(f"Redis at {redact(url)} refused the password; fix REELFLOW_REDIS_URL") from None
    return JobQueue(client, settings)


def start_pipeline(settings: Settings, use_ray: bool, device: str = "cpu"):
    """The pipeline a worker drives: Ray decoder actors and Serve replicas, or the data plane in this process."""
    if not use_ray:
        from services.worker import InProcessPipeline

        return InProcessPipeline(device=device, sources=settings.sources)
    from services.ray_pipeline import RayPipeline

    pipeline = RayPipeline(settings, device=device)
    pipeline.start()
    return pipeline


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
