"""What every route depends on: the Redis queue and settings the app works on (`configure`), and
the bearer-token checks.
"""

from __future__ import annotations

import hmac
from types import SimpleNamespace

from fastapi import HTTPException, Query, Request


# What the routes work on, set by configure(). Not on `api.state`: Serve pickles the app when an
# application is built, and a live Redis connection does not pickle.
STACK = SimpleNamespace(queue=None, settings=None, streams=None)


def configure(queue, settings) -> None:
    """Give the app its Redis queue and settings (once per process, before serving)."""
    STACK.queue, STACK.settings = queue, settings
    STACK.streams = queue.stream_registry()


def authorized(request: Request) -> None:
    token = STACK.settings.api_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token: send `Authorization: Bearer <REELFLOW_API_TOKEN>`",
                            headers={"WWW-Authenticate": "Bearer"})


def authorized_header_or_query(request: Request, token: str | None = Query(
        None, description="the API token, for clients that cannot send headers (EventSource)")) -> None:
    """The bearer header, or `?token=` (compared in constant time too)."""
    expected = STACK.settings.api_token
    if expected is not None and token is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return
    authorized(request)
