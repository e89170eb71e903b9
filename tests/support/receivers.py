"""Receivers for the sink and metrics tests: a webhook receiver that verifies signatures as a user's
would, a real MQTT broker (Debian's mosquitto) and a real Prometheus server (Debian's prometheus),
both installed by `make system-deps`.

    with WebhookReceiver(secret) as hook:        # hook.url; hook.messages (verified, in arrival order)
        hook.down()  ...  hook.up()              # the port stops answering, then answers again
        hook.status = 400                        # answer every POST with this status (unverified then too)

    with Mosquitto(tmp_path, users={"cam": "pw"}) as broker:   # broker.url("cam", "pw"), broker.subscribe("#")
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from services.sinks.webhook import HEADER, verify
from support.stack_process import free_port


class WebhookReceiver:
    def __init__(self, secret: str):
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.messages: list[dict] = []  # from verified deliveries, in arrival order
        self.posts = 0  # every POST, verified or not
        self.rejected = 0  # POSTs whose signature did not verify
        self.status = 200  # the answer to a verified POST
        self.authorization: str | None = None  # the last POST's Authorization header
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> WebhookReceiver:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify(receiver.secret, self.headers.get(HEADER, ""), body)
                with receiver._lock:
                    receiver.posts += 1
                    receiver.authorization = self.headers.get("Authorization")
                    status = receiver.status if ok else 400
                    if not ok:
                        receiver.rejected += 1
                    elif status == 200:
                        receiver.messages.extend(json.loads(body)["messages"])
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        deadline = time.monotonic() + 10
        while True:  # the port of a receiver just taken down may linger a moment
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def keys(self) -> list[tuple]:
        """Each message's idempotency key, in arrival order (repeats included)."""
        return [message_key(m) for m in list(self.messages)]


def message_key(m: dict) -> tuple:
    """What a receiver de-duplicates on: job and index, or stream and index (and event)."""
    if m["type"] == "segment":
        return ("segment", m["job_id"], m["index"])
    if m["type"] == "job":
        return ("job", m["job_id"], m["state"])
    if m["type"] == "stream.segment":
        return ("stream.segment", m["stream"], m["index"])
    return ("stream.event", m["stream"], m["index"], m["event"]["event"], m["event"]["label"])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise RuntimeError("mosquitto is not installed: run `make system-deps`")
    return found


class Mosquitto:
    """A mosquitto broker on a free loopback port; with `users`, only they may connect."""

    def __init__(self, tmp: Path, users: dict[str, str] | None = None, tls: bool = False):
        """`tls`: the listener speaks TLS with a certificate for 127.0.0.1 from a CA made here (`self.ca`)."""
        self.dir = tmp / f"mosquitto-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.users = users or {}
        self.tls = tls
        self.ca = self.dir / "ca.pem"
        self.proc: subprocess.Popen | None = None
        self.subscribers: list[subprocess.Popen] = []

    def url(self, user: str | None = None, password: str | None = None, prefix: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}127.0.0.1:{self.port}" + (f"/{prefix}" if prefix else "")

    def _certificates(self) -> list[str]:
        d = self.dir

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=reelflow test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                "-subj", "/CN=127.0.0.1")
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
        return [f"cafile {d / 'ca.pem'}", f"certfile {d / 'server.pem'}", f"keyfile {d / 'server.key'}"]

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def start(self) -> None:
        """Start the broker (again, on the same port, after `stop`)."""
        config = [f"listener {self.port} 127.0.0.1", "persistence false", f"log_dest file {self.dir / 'broker.log'}"]
        if os.geteuid() == 0:  # as root it would become the `mosquitto` user, who cannot read the test's files
            config.append("user root")
        if self.tls:
            config += self._certificates()
        if self.users:
            passwords = self.dir / "passwords"
            passwords.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)
            passwords.chmod(0o600)  # mosquitto warns about (and later refuses) a readable password file
            config += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            config.append("allow_anonymous true")
        (self.dir / "mosquitto.conf").write_text("\n".join(config) + "\n")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """The broker goes away (its subscribers with it)."""
        for proc in [*self.subscribers, self.proc]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.subscribers = []

    def subscribe(self, topic: str, out: Path, user: str | None = None, password: str | None = None) -> Path:
        """`mosquitto_sub -v` on `topic` at QoS 1, writing "topic payload" lines to `out`."""
        auth = ["-u", user, "-P", password] if user else []
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-v", "-t", topic,
                                *auth], stdout=open(out, "w"), stderr=subprocess.STDOUT)
        self.subscribers.append(sub)
        time.sleep(0.5)  # subscribed before the test publishes
        return out

    def __exit__(self, *exc) -> None:
        self.stop()


def received(out: Path) -> list[tuple[str, dict]]:
    """The (topic, message) lines `mosquitto_sub -v` wrote so far."""
    lines = []
    for line in out.read_text().splitlines():
        topic, _, payload = line.partition(" ")
        try:
            lines.append((topic, json.loads(payload)))
        except json.JSONDecodeError:
            pass  # a line being written
    return lines


class Prometheus:
    """Debian's prometheus server scraping `targets` (host:port) every second, on a free loopback port.

    with Prometheus(tmp_path, ["127.0.0.1:9400"]) as prom:
        prom.value('sum(reelflow_segments_stored_total)')     # None until it has a sample
    """

    def __init__(self, tmp: Path, targets: list[str]):
        self.dir = tmp / f"prometheus-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.targets = targets
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus is not installed: run `make system-deps`")
        targets = ", ".join(f"'{t}'" for t in self.targets)
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: reelflow\n    static_configs:\n      - targets: [{targets}]\n")
        self.proc = subprocess.Popen([binary, f"--config.file={self.dir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={self.dir / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "prometheus.log", "w"))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(self.dir / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def query(self, expression: str) -> list[dict]:
        """The instant vector of a PromQL expression, through the HTTP query API."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=10) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class OtlpReceiver:
    """An OpenTelemetry collector's OTLP/HTTP trace endpoint, as the exporter sees one: it decodes each
    POST to `/v1/traces` (protobuf) and keeps the spans.

        with OtlpReceiver() as otlp:     # otlp.endpoint for OTEL_EXPORTER_OTLP_ENDPOINT; otlp.spans()
    """

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._spans: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> OtlpReceiver:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest, ExportTraceServiceResponse)

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                spans = [receiver._span(rs, span) for rs in request.resource_spans
                         for ss in rs.scope_spans for span in ss.spans]
                with receiver._lock:
                    receiver._spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def _span(resource_spans, span) -> dict:
        def value(v):
            kind = v.WhichOneof("value")
            return getattr(v, kind) if kind else None

        resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
        return {"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                "parent_id": span.parent_span_id.hex() or None, "service": resource.get("service.name"),
                "attributes": {a.key: value(a.value) for a in span.attributes},
                "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano}

    def spans(self, name: str | None = None) -> list[dict]:
        with self._lock:
            return [s for s in self._spans if name is None or s["name"] == name]
