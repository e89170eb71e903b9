"""The MQTT sink: each message published at QoS 1 (the broker acknowledges it) on a topic that says
what it is about, as Frigate and DeepStream publish theirs.

    mqtt://[user:pass@]host[:port][/prefix]      1883 by default; prefix `reelflow` by default
    mqtts://[user:pass@]host[:port][/prefix][?ca=/path/ca.pem]    TLS, 8883; the system's CAs by default

| topic | messages |
|---|---|
| `<prefix>/jobs/<job id>` | a job's segments (`type` segment) and its end (`type` job) |
| `<prefix>/streams/<name>/segments` | a stream's windows |
| `<prefix>/streams/<name>/events` | a stream's label enter/exit events, and its evidence clips' states (`clip`) |

The client reconnects on its own (paho's loop, 1 s to 30 s apart); a batch counts as delivered
when the broker has acknowledged every message of it.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines.errors import ReelflowError, one_line
from services.sinks.base import DeliveryError, Sink, SinkError, kind
from services.store.client import redact

CONNECT_S = 10.0  # to connect, or to have a batch acknowledged
DEFAULT_PREFIX = "reelflow"


def topic(prefix: str, message: dict) -> str:
    if message["type"].startswith("stream."):
        return f"{prefix}/streams/{message['stream']}/{'events' if message['type'] == 'stream.event' else 'segments'}"
    return f"{prefix}/jobs/{message['job_id']}"


@kind("mqtt", "mqtts")
class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, url, settings):
        super().__init__(url, settings)
        parts = urlsplit(url)
        self.tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname, parts.port or (8883 if self.tls else 1883)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.prefix = parts.path.strip("/") or DEFAULT_PREFIX
        self.ca = parse_qs(parts.query).get("ca", [None])[0]
        self._client = None
        self._connected = threading.Event()
        self._refused: str | None = None

    @classmethod
    def check_url(cls, url, settings) -> None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- a port that is not a number raises here
        except ValueError as e:
            raise SinkError(f"MQTT sink {redact(url)!r}: {one_line(e)}; give mqtt://host:port/prefix") from None
        if not parts.hostname:
            raise SinkError(f"MQTT sink {redact(url)!r} has no host; give mqtt://[user:pass@]host:port/prefix")
        if "+" in parts.path or "#" in url:  # a `#` starts the URL's fragment
            raise SinkError(f"MQTT sink {redact(url)!r}: a topic prefix may not hold + or #")
        try:
            settings.sources.check_destination(url)
        except ReelflowError as e:
            raise SinkError(f"MQTT sink {redact(url)!r}: {one_line(e)}") from None

    def connect_check(self) -> None:
        """Connect now (a broker that is down or refuses our credentials is a one-line error)."""
        problem = self._connect()
        if problem:
            self.close()
            raise SinkError(f"MQTT sink {redact(self.url)!r}: {problem}")

    def send(self, messages: list[dict]) -> None:
        if self._client is None or not self._connected.is_set():
            problem = self._connect() if self._client is None else self._wait_connected()
            if problem:
                self.close()  # a fresh client next time: one that never connected does not reconnect
                raise DeliveryError(problem)
        try:
            sent = [self._client.publish(topic(self.prefix, m), json.dumps(m), qos=1) for m in messages]
        except ValueError as e:  # a topic with a wildcard in a name, a payload over the limit: never publishable
            raise DeliveryError(f"the broker cannot take these messages ({one_line(e, limit=200)})",
                                retryable=False) from None
        try:
            deadline = time.monotonic() + CONNECT_S
            for info in sent:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                if not info.is_published():
                    raise DeliveryError(f"broker {self.host}:{self.port} did not acknowledge within {CONNECT_S:g} s")
        except (DeliveryError, RuntimeError, ValueError, OSError) as e:  # paho: not connected, queue full
            self.close()  # a fresh client next time, without this one's unacknowledged messages
            if isinstance(e, DeliveryError):
                raise
            raise DeliveryError(f"cannot publish to {self.host}:{self.port} ({one_line(e, limit=200)})") from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self._connected.clear()

    # -- the connection --

    def _connect(self) -> str | None:
        """Start the client (its loop reconnects on its own); a reason if it is not connected soon."""
        import paho.mqtt.client as mqtt  # only where an MQTT sink is used

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"reelflow-{uuid.uuid4().hex[:12]}")
        if self.user is not None:
            client.username_pw_set(self.user, self.password)
        if self.tls:
            try:
                client.tls_set(ca_certs=self.ca, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError, ssl.SSLError) as e:
                return f"cannot set up TLS ({one_line(e)}); check ?ca=FILE"
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a, **k: self._connected.clear()
        client.reconnect_delay_set(1, 30)
        self._refused = None
        try:
            client.connect(self.host, self.port, keepalive=30)  # the TCP (and TLS) part, here: a refusal is quick
        except (OSError, ValueError) as e:
            return f"cannot reach the broker at {self.host}:{self.port} ({one_line(e)}); is it running?"
        self._client = client
        client.loop_start()  # from here on paho reconnects by itself
        problem = self._wait_connected()
        if problem:
            self.close()
        return problem

    def _wait_connected(self) -> str | None:
        if self._connected.wait(CONNECT_S):
            return None
        if self._refused:
            return (f"the broker at {self.host}:{self.port} refused the connection ({self._refused}); "
                    "check the user and password")
        return f"cannot reach the broker at {self.host}:{self.port} within {CONNECT_S:g} s; is it running?"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._connected.clear()
        else:
            self._connected.set()
