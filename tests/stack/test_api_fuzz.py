"""Schemathesis against the HTTP API's own OpenAPI document: generated requests (valid and not)
to every route never get a 5xx, a hang, or a response that breaks the schema.

The API runs as `reelflow up` runs it on uvicorn (`services.api` configured on a real embedded
Redis), with a token; a bounded budget of examples per route keeps it to about a minute.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from services.store.embedded import EmbeddedRedis
from support.stack_process import fast_settings, free_port

TOKEN = "fuzz-token"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.fixture
def api_url(tmp_path, monkeypatch):
    import uvicorn

    from services.api import api, configure
    from services.store.queue import JobQueue
    import redis as redis_lib

    monkeypatch.chdir(tmp_path)
    embedded = EmbeddedRedis(tmp_path / "home")
    url = embedded.start()
    settings = fast_settings(url, tmp_path / "home", api_token=TOKEN, allowed_roots=str(tmp_path))
    configure(JobQueue(redis_lib.Redis.from_url(url), settings), settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        embedded.stop()


def test_generated_requests_never_get_a_server_error(api_url):
    assert requests.get(f"{api_url}/v1/health", timeout=5).status_code == 200
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{api_url}/openapi.json", "--checks", "not_a_server_error,status_code_conformance,"
         "response_schema_conformance", "--max-examples", "8", "--phases", "coverage,fuzzing", "--header", f"Authorization: Bearer {TOKEN}",
         "--request-timeout", "10", "--exclude-path", "/v1/streams/{name}/results", "--exclude-path", "/v1/dashboard/events", "--seed", "1"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower() or "no issues found" in result.stdout.lower(), result.stdout[-3000:]
