"""The webhook sink: an HTTP POST of a JSON batch, signed as Stripe signs its webhooks.

    POST <url>
    Content-Type: application/json
    Reelflow-Signature: t=1764460800,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

    {"messages": [{"type": "segment", "job_id": "...", "index": 0, "segment": {...}}, ...]}

`v1` is the hex HMAC-SHA256, under REELFLOW_SINK_SECRET, of `"<t>.<body>"`; a receiver recomputes
it over the raw body, compares in constant time and refuses a `t` too old (`verify` below does
both). 2xx: delivered. Connection errors, timeouts, 5xx, 408 and 429 are tried again (backoff);
other statuses (a 4xx, a redirect) are final: the batch goes to the sinks' dead-letter list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from pipelines.errors import ReelflowError, one_line
from services.sinks.base import DeliveryError, Sink, SinkError, kind
from services.store.client import redact

HEADER = "Reelflow-Signature"
TIMEOUT_S = 10.0
TOLERANCE_S = 300  # how old a signature `verify` accepts
RETRYABLE = {408, 429}


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """The `Reelflow-Signature` header's value for `body`, signed at `t` (now)."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver does: True if `header` signs `body` under `secret`, at most `tolerance_s` ago
    (any of several `v1` values may match: a sender between two secrets signs with both)."""
    try:
        pairs = [part.split("=", 1) for part in header.split(",")]
        t = int(next(v for k, v in pairs if k.strip() == "t"))
    except (ValueError, StopIteration):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(expected, v.strip().encode()) for k, v in pairs if k.strip() == "v1")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a redirect is an answer of its own: the batch is not re-sent elsewhere


@kind("http", "https")
class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, url, settings):
        super().__init__(url, settings)
        self._opener = urllib.request.build_opener(_NoRedirects)
        parts = urlsplit(url)
        self._headers = {"Content-Type": "application/json", "User-Agent": "reelflow"}
        if parts.username is not None:  # https://user:pass@host/...: HTTP basic authentication, as curl does
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            self.target = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        else:
            self.target = url

    @classmethod
    def check_url(cls, url, settings) -> None:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a port that is not a number raises ValueError here
        if not parts.hostname:
            raise SinkError(f"webhook sink {redact(url)!r} has no host; give it as https://host[:port]/path")
        try:
            settings.sources.check_destination(url)
        except ReelflowError as e:
            raise SinkError(f"webhook sink {redact(url)!r}: {one_line(e)}") from None

    @classmethod
    def check_stack(cls, url, settings) -> None:
        if not settings.sink_secret:
            raise SinkError(f"webhook sink {redact(url)!r} signs what it sends: set REELFLOW_SINK_SECRET "
                            "(e.g. `openssl rand -hex 32`) on the stack, and give it to the receiver")

    def send(self, messages: list[dict]) -> None:
        if not self.settings.sink_secret:
            raise DeliveryError("REELFLOW_SINK_SECRET is not set on this worker; deliveries wait until it is")
        body = json.dumps({"messages": messages}).encode()
        request = urllib.request.Request(self.target, data=body, method="POST",
                                         headers={**self._headers, HEADER: sign(self.settings.sink_secret, body)})
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as e:
            retryable = e.code >= 500 or e.code in RETRYABLE
            raise DeliveryError(f"HTTP {e.code} {e.reason} from {redact(self.url)}", retryable) from None
        except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", e)  # HTTPException: an answer that is not HTTP, or cut short
            raise DeliveryError(f"cannot reach {redact(self.url)} ({one_line(reason, limit=200)})") from None
