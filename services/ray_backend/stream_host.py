"""Live streams on Ray: a StreamHost actor runs the streams of one `up`, one thread each, and sends
their clips to the same Serve model replicas as bulk jobs (so clips of all streams and jobs batch
together). A killed host is restarted by Ray; the worker's stream manager then restarts its
streams on it.
"""

from __future__ import annotations

import os

import ray

from pipelines.labels import labels_for
from pipelines.models import get_spec
from pipelines.sources import SourcePolicy
from services import metrics
from services.ray_backend.metrics import RayMetrics
from services.ray_backend.replica import payload_for
from services.store.streams import StreamRegistry, StreamSpec


@ray.remote
class StreamHost:
    def __init__(self, record_metrics: bool = True):
        self.runners: dict = {}
        # the runners' metrics, exported by this node's metrics agent
        metrics.use(RayMetrics() if record_metrics else metrics.OFF)

    def pid(self) -> int:
        return os.getpid()

    def run(self, target, spec_json: str, redis_url: str, owner: str, sources: SourcePolicy) -> None:
        """Read and classify one stream until `stop(name)`."""
        from services.worker.stream_runner import StreamRunner  # PyAV and torch: in this actor, not in `reelflow up`

        spec = StreamSpec.model_validate_json(spec_json)
        model = get_spec(spec.model)
        handle = target.handle()  # a services.ray_backend.pipeline.Target
        info = handle.describe.remote().result()
        policy = sources.for_streams()
        url = policy.check(spec.url)
        runner = StreamRunner(spec, StreamRegistry.at(redis_url), owner,
                              labels_for(info["num_classes"], classes=info.get("classes")), info["weights_id"],
                              prepare=lambda frames: payload_for(frames, model, info["clip_format"]),
                              classify=lambda payload, deadline: handle.remote(payload, None, deadline, spec.name),
                              open_options=policy.ffmpeg_options(url))
        self.runners[spec.name] = runner
        try:
            runner.run()
        finally:  # a runner of a later hold on the stream may be there already: leave it
            if self.runners.get(spec.name) is runner:
                del self.runners[spec.name]

    def stop(self, name: str) -> None:
        runner = self.runners.get(name)
        if runner is not None:
            runner.stop.set()


class RayStreamHandle:
    """The worker's handle on a stream running in a StreamHost."""

    def __init__(self, host, name: str, ref):
        self.host, self.name, self.ref = host, name, ref

    def alive(self) -> bool:
        return not ray.wait([self.ref], timeout=0)[0]

    def stop(self) -> None:
        try:
            self.host.stop.remote(self.name)
            ray.wait([self.ref], timeout=20)
        except Exception:  # the host is gone already: so is the stream
            pass
