"""`reelflow up --metrics-port P`: Prometheus's text format at http://127.0.0.1:P/metrics — this
process's metrics (the worker, its sinks, in-process streams) and, on Ray, everything this
machine's Ray node exports (the stream host's and model replicas' reelflow metrics, Ray's and Ray
Serve's own), so one scrape target covers the stack.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipelines.errors import ReelflowError, one_line
from services.metrics import REGISTRY, from_ray

FETCH_S = 5.0  # how long a scrape waits for the Ray node's metrics


class MetricsEndpoint:
    def __init__(self, port: int, more: Callable[[], str | None] = lambda: None):
        """`more()`: the URL of another exporter whose metrics are served too (a Ray node's), or None."""
        self.more = more
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 -- http.server's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "the metrics are at /metrics")
                    return
                body = endpoint.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds: not worth a log line
                pass

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as e:
            raise ReelflowError(f"cannot serve metrics on 127.0.0.1:{port} ({one_line(e)}); choose another "
                                "--metrics-port") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="reelflow-metrics")
        self._thread.start()

    def text(self) -> str:
        text = generate_latest(REGISTRY).decode()
        try:
            url = self.more()
            if url:
                with urllib.request.urlopen(url, timeout=FETCH_S) as answer:
                    text += from_ray(answer.read().decode())
        except Exception as e:  # noqa: BLE001 -- Ray restarting, say: this process's metrics still go out
            text += f"# the Ray node's metrics are missing from this scrape: {one_line(e, limit=200)}\n"
        return text

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
