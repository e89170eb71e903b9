"""The HTTP API without Ray: uvicorn on a thread of this process (`reelflow up --no-ray --http-port`)."""

from __future__ import annotations

import threading

import uvicorn

from services.api.deps import configure
from services.api.routes import api
from services.settings import Settings
from services.store.queue import JobQueue


def serve_in_thread(queue: JobQueue, settings: Settings, host: str, port: int) -> None:
    """Serve the API on host:port from a daemon thread; returns at once."""
    configure(queue, settings)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="reelflow-http").start()
