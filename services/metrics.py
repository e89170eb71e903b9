"""Every Prometheus metric reelflow exposes: one table, the README's list is made from it
(`python -m services.metrics`) and a test checks that the two agree.

Names follow Prometheus's conventions: the `reelflow_` prefix, base units (`_seconds`), `_total`
for counters; labels have bounded values (a model, a stream's name, a state, a sink's kind — never
a job id). Code records through `inc`, `observe` and `set_gauge`, by name; in a plain process the
values go to prometheus-client's registry of this module (served by `reelflow up --metrics-port`).

    >>> inc("reelflow_segments_stored_total", model="x3d_xs")
    >>> REGISTRY.get_sample_value("reelflow_segments_stored_total", {"model": "x3d_xs"}) >= 1
    True
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # live: p50 0.14 s here
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)  # a job: seconds to an hour


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


METRICS = [
    # jobs (the worker: `up`, the Serve application's consumer)
    MetricSpec("reelflow_jobs_ended_total", "counter", "jobs this worker ended, by how they ended (done, failed)",
               ("model", "state")),
    MetricSpec("reelflow_jobs_retried_total", "counter", "job attempts that failed and were queued again",
               ("model",)),
    MetricSpec("reelflow_segments_stored_total", "counter", "segment results stored (each once per job and index)",
               ("model",)),
    MetricSpec("reelflow_job_duration_seconds", "histogram", "from a job's submission to its end (done jobs)",
               ("model",), DURATION_BUCKETS),
    MetricSpec("reelflow_queue_jobs", "gauge", "jobs in the queue by state (waiting, claimed, retrying, "
               "dead_lettered), read from Redis at each scrape", ("state",)),
    # live streams (their runners)
    MetricSpec("reelflow_stream_frames_total", "counter", "frames read from the stream's source", ("stream",)),
    MetricSpec("reelflow_stream_windows_total", "counter", "windows classified and published", ("stream",)),
    MetricSpec("reelflow_stream_dropped_total", "counter",
               "windows dropped: the model or the reader was behind (late for the latency target, or skipped "
               "undecoded up to a keyframe)", ("stream",)),
    MetricSpec("reelflow_stream_cheap_gops_total", "counter",
               "GOPs decoded without the deblocking filter because the reader was behind (REELFLOW_STREAM_CHEAP_DECODING)",
               ("stream",)),
    MetricSpec("reelflow_stream_reconnects_total", "counter", "times the source was opened again", ("stream",)),
    MetricSpec("reelflow_stream_gaps_total", "counter", "times frames stopped coming (error, end, stale)",
               ("stream",)),
    MetricSpec("reelflow_stream_latency_seconds", "histogram", "from a window's last frame to its published result",
               ("stream",), LATENCY_BUCKETS),
    MetricSpec("reelflow_stream_up", "gauge", "1 while the stream's frames come (state live), else 0", ("stream",)),
    # model replicas (Ray Serve)
    MetricSpec("reelflow_replica_batch_clips", "histogram", "clips per forward pass", ("model",),
               (1, 2, 3, 4, 6, 8, 12, 16, 32)),
    MetricSpec("reelflow_replica_forward_seconds", "histogram", "seconds per forward pass (a batch)", ("model",),
               (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)),
    MetricSpec("reelflow_replica_clips_waiting", "gauge", "clips waiting for a forward lane, as a batch forms",
               ("model",)),
    MetricSpec("reelflow_model_replicas", "gauge", "running replicas of a model, as the worker last read them",
               ("model",)),
    MetricSpec("reelflow_decode_seconds", "histogram", "seconds to decode and sample one clip of a job (its transform not included)",
               ("model",), (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)),
    # the vector index (its indexers)
    MetricSpec("reelflow_index_segments_total", "counter", "segments this worker's indexer put in the vector index",
               ()),
    MetricSpec("reelflow_index_waiting", "gauge", "segments waiting in Redis for the vector index, read at each "
               "scrape", ()),
    # sinks (the deliverers)
    MetricSpec("reelflow_sink_delivered_total", "counter", "messages a sink took", ("kind",)),
    MetricSpec("reelflow_sink_failures_total", "counter", "deliveries that failed (retried, or dead-lettered)",
               ("kind",)),
    MetricSpec("reelflow_sink_dead_lettered_total", "counter", "messages moved to the sinks' dead-letter list",
               ("kind",)),
]
SPECS = {m.name: m for m in METRICS}

REGISTRY = CollectorRegistry(auto_describe=True)
_made: dict[str, object] = {}
_lock = threading.Lock()


def _metric(name: str):
    metric = _made.get(name)
    if metric is None:
        with _lock:
            metric = _made.get(name)
            if metric is None:
                spec = SPECS[name]  # KeyError: a name missing from the table above
                if spec.kind == "counter":  # prometheus-client adds `_total` itself
                    metric = Counter(name.removesuffix("_total"), spec.help, spec.labels, registry=REGISTRY)
                elif spec.kind == "gauge":
                    metric = Gauge(name, spec.help, spec.labels, registry=REGISTRY)
                else:
                    metric = Histogram(name, spec.help, spec.labels, buckets=spec.buckets, registry=REGISTRY)
                _made[name] = metric
    return metric


def _child(name: str, labels: dict):
    metric = _metric(name)
    return metric.labels(**labels) if labels else metric


class _PrometheusClient:
    """The default: this process's prometheus-client registry (`up --metrics-port` serves it)."""

    def inc(self, name: str, value: float, labels: dict) -> None:
        _child(name, labels).inc(value)

    def observe(self, name: str, value: float, labels: dict) -> None:
        _child(name, labels).observe(value)

    def set(self, name: str, value: float, labels: dict) -> None:
        _child(name, labels).set(value)


class _Off:
    """Records nothing (`REELFLOW_METRICS=0`)."""

    def inc(self, name: str, value: float, labels: dict) -> None:
        pass

    observe = set = inc


OFF = _Off()
_backend = _PrometheusClient()


def use(backend) -> None:
    """Record through `backend` (inc, observe, set by name) from now on: in a Ray actor, Ray's own
    metrics (services.ray_backend.metrics), which every node's metrics agent exports; `OFF`: nothing."""
    global _backend
    _backend = backend


def inc(name: str, value: float = 1.0, **labels: str) -> None:
    if value:
        _backend.inc(name, value, labels)


def observe(name: str, value: float, **labels: str) -> None:
    _backend.observe(name, value, labels)


def set_gauge(name: str, value: float, **labels: str) -> None:
    _backend.set(name, value, labels)


RAY_PREFIX = "ray_"  # Ray's metrics agent exports an actor's metric `reelflow_x` as `ray_reelflow_x`


def from_ray(text: str) -> str:
    """A Ray node's metrics text with reelflow's metrics under their own names (Ray's keep theirs)."""
    return text.replace(f"{RAY_PREFIX}reelflow_", "reelflow_")


class _ReadAtScrape:
    """A collector whose gauge is read when Prometheus scrapes (the queue's depth from Redis)."""

    def __init__(self, name: str, read: Callable[[], dict[str, float]]):
        self.spec, self.read = SPECS[name], read

    def collect(self):
        family = GaugeMetricFamily(self.spec.name, self.spec.help, labels=self.spec.labels)
        try:
            values = self.read()
        except Exception:  # Redis away: no sample this scrape, rather than a failed scrape
            values = {}
        for label, value in values.items():
            family.add_metric([label] if self.spec.labels else [], value)
        yield family

    def describe(self):
        return []


def read_at_scrape(name: str, read: Callable[[], dict[str, float]]) -> Callable[[], None]:
    """Register `read` (-> {label value: value}; a gauge without labels: {"": value}) for the gauge
    `name`; returns its unregistering."""
    collector = _ReadAtScrape(name, read)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


def markdown_table() -> str:
    """The README's list of metrics, from the table above."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.help} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m services.metrics: the README's table
    sys.stdout.write(markdown_table() + "\n")
