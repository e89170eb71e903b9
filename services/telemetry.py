"""OpenTelemetry traces from submit to publish; the trace context travels in the job message.

Off unless `OTEL_TRACES_EXPORTER` says where spans go: `console` (stderr) or `otlp` (the standard
`OTEL_EXPORTER_OTLP_*` variables configure it). Spans: `reelflow.submit` (the client), then
`reelflow.job` (one per delivery, a child of the submit span, even in another process or on
another machine) and `reelflow.publish` (one per stored segment).

    >>> with tracer().start_as_current_span("reelflow.submit"):            # doctest: +SKIP
    ...     spec.trace = current_context()
"""

from __future__ import annotations

import os
import sys

from opentelemetry import propagate, trace
from opentelemetry.context import Context

_configured = False


def setup(service_name: str = "reelflow") -> None:
    """Install a tracer provider with the exporter the environment names (once per process)."""
    global _configured
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if _configured or exporter_name in ("", "none"):
        return
    from opentelemetry.sdk.resources import Resource  # the SDK loads only when traces are exported
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout is for results
    elif exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported; use console, otlp or none")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("reelflow")


def current_context() -> dict[str, str] | None:
    """The W3C trace context (traceparent) of the current span, for the job message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from(carrier: dict[str, str] | None) -> Context:
    return propagate.extract(carrier or {})
