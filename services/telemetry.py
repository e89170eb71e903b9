"""OpenTelemetry traces from submit to publish; the trace context travels in the job message.

Off unless `OTEL_TRACES_EXPORTER` says where spans go: `console` (stderr) or `otlp` (the standard
`OTEL_EXPORTER_OTLP_*` variables configure it). Spans:

    reelflow.submit                       the client
      reelflow.job                        the worker, one per delivery (another process, or machine)
        reelflow.decode                   per segment: read and sample its frames   } in the Ray replica
        reelflow.transform                per segment: resize, crop, normalize      } or decoder actor
        reelflow.model_batch              per segment: the forward pass of its batch (batch size)
        reelflow.store                    per segment: stored and published in Redis (the worker)

The job span's context goes to the Ray actors inside the job's spec, and the exporter's settings
(the `OTEL_*` variables) go to the replicas with their arguments, so their spans join the job's
trace on any node. The `--no-ray` pipeline records the job and store spans.

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


def exporter_env() -> dict[str, str]:
    """This process's `OTEL_*` variables: handed to Ray actors, which may run on other machines."""
    return {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}


def setup_from(env: dict[str, str] | None, service_name: str) -> None:
    """In a Ray actor: take the `OTEL_*` variables its creator had, then `setup()`."""
    for key, value in (env or {}).items():
        os.environ.setdefault(key, value)
    setup(service_name)


def enabled() -> bool:
    """Whether spans go anywhere (a tracer provider is installed): per-segment spans cost nothing otherwise."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def record_span(name: str, parent: Context, start_ns: int, end_ns: int, attributes: dict | None = None) -> None:
    """A span measured already (`time.time_ns()` at both ends): for work timed where no span was open."""
    span = tracer().start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    span.end(end_time=end_ns)


def tracer() -> trace.Tracer:
    return trace.get_tracer("reelflow")


def current_context() -> dict[str, str] | None:
    """The W3C trace context (traceparent) of the current span, for the job message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def context_from(carrier: dict[str, str] | None) -> Context:
    return propagate.extract(carrier or {})
