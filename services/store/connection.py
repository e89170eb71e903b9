"""Finding (or starting) the Redis a reelflow stack runs on.

Clients and workers agree through one rule: `REELFLOW_REDIS_URL` if set, else the embedded server
under the reelflow home (`--home`, `REELFLOW_HOME`, or ~/.local/share/reelflow).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import redis
from redis.connection import parse_url

from pipelines.errors import ReelflowError
from services.embedded_redis import EmbeddedRedis
from services.queue import JobQueue
from services.settings import Settings


def default_allowed_roots(files: list[str] = (), models: list[str] = ()) -> str:
    """A stack opens local videos (and Hugging Face model directories, `hf:DIR`) only under
    REELFLOW_ALLOWED_ROOTS; unset, it defaults to the directory the stack was started in plus the
    files and models named on its command line. Set in this process's environment, so that every
    Ray process it starts follows the same rule."""
    if not os.environ.get("REELFLOW_ALLOWED_ROOTS", "").strip():
        named = [str(Path(f).expanduser().resolve()) for f in files if "://" not in f]
        named += [m[3:] for m in models if m.startswith("hf:/")]
        os.environ["REELFLOW_ALLOWED_ROOTS"] = ":".join([os.getcwd(), *named])
    return os.environ["REELFLOW_ALLOWED_ROOTS"]


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
    try:
        # A short timeout for this first ping: a TLS handshake with a plain port would wait it out.
        probe = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        probe.ping()
        probe.close()
    except ValueError as e:  # a malformed URL
        raise ReelflowError(f"bad Redis URL {redact(url)}: {one_line(e)}") from None
    except redis.AuthenticationError as e:  # before ConnectionError: it is one
        raise ReelflowError(_auth_error(url, e)) from None
    except redis.ResponseError as e:  # an older server's NOAUTH / WRONGPASS, or e.g. LOADING
        if str(e).startswith(("NOAUTH", "WRONGPASS")):
            raise ReelflowError(_auth_error(url, e)) from None
        raise ReelflowError(f"Redis at {redact(url)} answered PING with an error: {one_line(e)}") from None
    except (redis.RedisError, OSError) as e:  # refused, timed out, TLS failures, a missing CA file
        hint = ("give a private CA as ?ssl_ca_certs=/path/ca.crt" if "CERTIFICATE_VERIFY_FAILED" in str(e)
                else "is the stack up?")
        raise ReelflowError(f"cannot reach Redis at {redact(url)} ({one_line(e)}); {hint}") from None
    return JobQueue(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30), settings)


def _auth_error(url: str, error: Exception) -> str:
    if parse_url(url).get("password"):
        return f"Redis at {redact(url)} refused the password ({one_line(error)}); fix REELFLOW_REDIS_URL"
    return f"Redis at {redact(url)} needs a password: give it as redis://:PASSWORD@host:port/0 in REELFLOW_REDIS_URL"


def one_line(error: Exception) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def start_pipeline(settings: Settings, use_ray: bool, device: str = "cpu", http: tuple[str, int] | None = None):
    """The pipeline a worker drives: Ray decoder actors and Serve replicas, or the data plane in this process.
    `http` (host, port): where Serve's HTTP proxy listens."""
    if not use_ray:
        from services.worker import InProcessPipeline

        return InProcessPipeline(device=device, sources=settings.sources)
    from services.ray_pipeline import RayPipeline

    pipeline = RayPipeline(settings, device=device)
    pipeline.start(http=http)
    return pipeline


def redact(url: str) -> str:
    """The URL without its password (user info or `password=` argument), for messages.

    >>> redact("unix://:s3cret@/home/me/redis/redis.sock")
    'unix://***@/home/me/redis/redis.sock'
    >>> redact("rediss://default:s3cret@db:6380/0?ssl_ca_certs=/ca.crt&password=s3cret")
    'rediss://***@db:6380/0?ssl_ca_certs=/ca.crt&password=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head, question, query = rest.partition("?")
    if "@" in head:  # everything before the last @ of the authority; a path with an @ is cut short too
        head = "***@" + head.rsplit("@", 1)[1]
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", query)
    return f"{scheme}://{head}{question}{query}"
