"""Sinks: where segments, job ends and stream events are pushed, beyond Redis.

A sink is a URL whose scheme names its kind — `http(s)://` a signed webhook (webhook.py),
`mqtt(s)://` an MQTT broker (mqtt.py), `file:///DIR` JSON lines (files.py) — configured for the
whole stack (REELFLOW_SINKS), per job (`submit --sink`) or per stream (`watch --sink`). Messages
wait in the sink's outbox in Redis (services.store.outbox) and a deliverer (publisher.py) sends
them, in order, at least once.

    >>> check_sink_urls(["kafka://broker:9092"], Settings())
    Traceback (most recent call last):
    ...
    services.sinks.base.SinkError: unknown sink kind 'kafka' in 'kafka://broker:9092'; use http(s)://, mqtt(s)://HOST, file:///DIR
"""

from __future__ import annotations

from services.settings import Settings
from services.sinks import files, mqtt, webhook  # noqa: F401 -- each registers its kind
from services.sinks.base import KINDS, DeliveryError, Sink, SinkError
from services.store.client import redact

__all__ = ["DeliveryError", "Sink", "SinkError", "check_sink_urls", "open_sink"]


def _kind(url: str) -> type[Sink]:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in KINDS:
        what = f"unknown sink kind {scheme!r} in" if scheme else "no sink kind (scheme) in"
        raise SinkError(f"{what} {redact(url)!r}; use http(s)://, mqtt(s)://HOST, file:///DIR")
    return KINDS[scheme]


def check_sink_urls(urls: list[str], settings: Settings, connect: bool = False, stack: bool = False) -> None:
    """SinkError, one line naming the sink and the fix, for the first URL that cannot be a sink;
    with `connect`, also for one whose receiver cannot be reached or refuses us now (an MQTT
    broker down or refusing the credentials); with `stack`, for one the stack's settings cannot
    serve (a webhook without REELFLOW_SINK_SECRET, a directory it cannot write)."""
    for url in urls:
        cls = _kind(url)
        try:
            cls.check_url(url, settings)
        except ValueError as e:  # urlsplit: a bracket left open, a port that is not a number...
            raise SinkError(f"sink {redact(url)!r} is not a well-formed URL ({e})") from None
        if stack:
            cls.check_stack(url, settings)
        if connect:
            sink = open_sink(url, settings)
            try:
                sink.connect_check()
            finally:
                sink.close()


def open_sink(url: str, settings: Settings) -> Sink:
    try:
        return _kind(url)(url, settings)
    except ValueError as e:
        raise SinkError(f"sink {redact(url)!r} is not a well-formed URL ({e})") from None
