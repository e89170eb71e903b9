"""Live streams on Ray: a StreamHost actor runs the streams of one `up`, one thread each, and sends
their clips to the same Serve model replicas as bulk jobs (so clips of all streams and jobs batch
together). A killed host is restarted by Ray; the worker's stream manager then restarts its
streams on it.
"""

from __future__ import annotations

import os
import sys

import ray

from pipelines.labels import labels_for
from pipelines.models import get_spec
from pipelines.sources import SourcePolicy
from services import metrics
from services.ray_backend.metrics import RayMetrics
from services.ray_backend.replica import payload_for
from services.store.streams import StreamRegistry, StreamSpec


SWITCH_INTERVAL_S = 0.0005  # the GIL's, in the stream host's process (Python's default: 0.005)


@ray.remote
class StreamHost:
    def __init__(self, record_metrics: bool = True):
        self.runners: dict = {}
        # Dozens of reader threads: one that comes back from decoding (FFmpeg runs without the GIL)
        # waits for the GIL, holding its decoding slot, up to the switch interval (5 ms by default,
        # five frames' decoding). Past ~30 cameras those waits fed on each other: readers fell
        # behind with a core idle. 0.5 ms: 40 readers decoded 990 frames/s against 930 and skipped
        # to a keyframe 28-99 times a minute against 186-223; with the one torch thread below, 16
        # cameras on a stack dropped 50 windows in three 40 s turns against 95 (benchmarks/streams.md).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        import torch  # this actor prepares clips: in its process, not in `reelflow up`

        # Clips are prepared by dozens of streams' threads at once: one torch thread each (x3d_xs:
        # 6 ms of CPU a clip, against 15 ms with two). Set here, before any stream's thread runs: set
        # from a stream's thread while others prepared clips, the slow RTSP outage test failed twice.
        torch.set_num_threads(1)
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
