"""reelflow's metrics (services.metrics) recorded in a Ray actor: through ray.util.metrics, which
the node's metrics agent exports for Prometheus (as `ray_reelflow_...`; `reelflow up
--metrics-port` and the PodMonitor's relabeling give them back their names).

    >>> metrics.use(RayMetrics())        # doctest: +SKIP   -- in the actor's __init__
"""

from __future__ import annotations

import threading

from ray.util.metrics import Counter, Gauge, Histogram

from services.metrics import SPECS


class RayMetrics:
    def __init__(self):
        self._made: dict[str, object] = {}
        self._lock = threading.Lock()

    def _metric(self, name: str):
        metric = self._made.get(name)
        if metric is None:
            with self._lock:
                metric = self._made.get(name)
                if metric is None:
                    spec = SPECS[name]
                    if spec.kind == "counter":
                        metric = Counter(name, description=spec.help, tag_keys=spec.labels)
                    elif spec.kind == "gauge":
                        metric = Gauge(name, description=spec.help, tag_keys=spec.labels)
                    else:
                        metric = Histogram(name, description=spec.help, boundaries=list(spec.buckets),
                                           tag_keys=spec.labels)
                    self._made[name] = metric
        return metric

    def inc(self, name: str, value: float, labels: dict) -> None:
        self._metric(name).inc(value, tags=labels or None)

    def observe(self, name: str, value: float, labels: dict) -> None:
        self._metric(name).observe(value, tags=labels or None)

    def set(self, name: str, value: float, labels: dict) -> None:
        self._metric(name).set(value, tags=labels or None)
