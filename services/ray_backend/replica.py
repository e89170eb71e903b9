"""The model replica: a Ray Serve deployment that batches clips from every decoder.

Clips arrive in the replica's wire format, which it announces in `describe()`: float32 model input
(on a CPU the decoder's cores do the transform), or uint8 crop taps (`pipelines.transforms.CropTaps`)
that a GPU replica blends and normalizes on its device, from pinned memory, at a quarter of the
bytes per value. Both give the same numbers. `services.ray_backend.batcher` forms the batches, when a forward
lane is free (on a CPU, one lane per core); the largest batch is the setting, or, by default,
whichever batch size ran fastest on this machine (`services.ray_backend.batch_rates`: timed by the first
replica, kept for the next).
"""

from __future__ import annotations

import logging
import os

import numpy as np
from ray import serve

from services import metrics, telemetry
from services.ray_backend.batch_rates import batch_rates
from services.ray_backend.batcher import Batcher
from services.ray_backend.fused_jobs import job_results
from services.ray_backend.metrics import RayMetrics
from services.settings import MAX_AUTO_BATCH

log = logging.getLogger("reelflow.replica")

REPLICA = "ModelReplica"
# A live window's forward pass must end by its deadline plus this share of the latency target: the
# rest of twice the target is for the way back (Serve's reply to the stream host, publishing) and for
# passes slower than the batcher's estimate. Past capacity, 24 cameras of 340x256 (the model short):
# p95 2.08-2.17 s with all of it (1.0), 1.79-1.89 s with 0.7, 1.61-1.73 s with 0.5, windows delivered
# no fewer (benchmarks/streams.md)
LATE_SHARE = 0.5


@serve.deployment(name=REPLICA)
class ModelReplica:
    """One model with its weights; clips from any decoder are batched together."""

    def __init__(self, model: str, weights: str, *, device: str = "cpu", batch_size: int = 0,
                 batch_wait_s: float = 0.02, threads: int = 0, forward_threads: int = 1, clip_format: str = "auto",
                 precision: str = "float32", telemetry_env: dict[str, str] | None = None,
                 record_metrics: bool = True, runtime: str = "auto", model_cache: str | None = None,
                 stream_latency_s: float | None = None):
        # OpenMP threads that spin while they wait burn the core a decoding thread needs: torch's
        # sleep instead (measured: a third less CPU per clip beside a busy decoder). Read once, when
        # torch loads its OpenMP runtime, so it is set before the first `import torch` here.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        # batches, forward passes, decoding: exported by this node's metrics agent
        metrics.use(RayMetrics() if record_metrics else metrics.OFF)
        telemetry.setup_from(telemetry_env, "reelflow-replica")  # spans: where `up` sends its own

        from pipelines.inference import ClipModel

        # The thread budget: `threads` cores (by default all of the node's; Ray alone would cap a
        # fractional-CPU actor at one). On a CPU they run that many / `forward_threads` forward
        # passes at once (lanes); a GPU runs one pass at a time, and torch gets all the threads.
        cores = threads or os.cpu_count() or 1
        gpu = torch.device(device).type == "cuda"
        self.lanes = 1 if gpu else max(1, cores // max(1, forward_threads))
        torch.set_num_threads(cores if gpu else max(1, min(forward_threads, cores)))
        # on OpenVINO (the default on CPUs), converted once per machine and kept in `model_cache`; a
        # stream of its threads per lane (each lane's passes on threads of their own)
        self.clip_model = ClipModel.load(model, weights, device, precision, runtime=runtime, cache_dir=model_cache,
                                         threads=cores, streams=self.lanes)
        self.clip_format = clip_format if clip_format != "auto" else ("uint8" if gpu else "float32")
        self.batch_rates: dict[int, float] = {}
        if batch_size == 0:  # auto: the fastest batch size of this model on this machine (one lane's)
            self.batch_rates = batch_rates(self.clip_model, [b for b in (1, 2, 4, 8, 16) if b <= MAX_AUTO_BATCH])
            # the largest size within 5% of the fastest: timings are noisy, and bigger batches also
            # absorb bursts from many jobs and streams
            best = max(self.batch_rates.values())
            batch_size = max(b for b, rate in self.batch_rates.items() if rate >= 0.95 * best)
            log.info("%s: batch size %d (clips/s by batch size: %s)", model, batch_size,
                     {b: round(r, 1) for b, r in self.batch_rates.items()})
        self.batch_size = batch_size
        # a live window's pass ends at most LATE_SHARE of the streams' latency target past its deadline
        # (REELFLOW_STREAM_LATENCY_S): latency under overload stays within twice the target
        late_s = stream_latency_s * LATE_SHARE if stream_latency_s is not None else None
        self.batcher = Batcher(self._forward_batch, batch_size, self.lanes, batch_wait_s, model=model, late_s=late_s)
        self.batcher.warm(self._warm)

    def _warm(self) -> None:
        """A forward pass of each batch size up to the largest (on a lane's thread)."""
        for size in range(1, self.batch_size + 1):
            self.clip_model.predict(self.clip_model.example_batch(size))

    def describe(self) -> dict:
        import torch

        return {"weights_id": self.clip_model.weights_id, "num_classes": self.clip_model.num_classes,
                "classes": self.clip_model.classes,  # a trained checkpoint's class names, else None
                "clip_format": self.clip_format, "batch_size": self.batch_size, "batch_rates": self.batch_rates,
                "lanes": self.lanes, "torch_threads": torch.get_num_threads(), "precision": self.clip_model.precision,
                "runtime": self.clip_model.runtime, "runtime_note": self.clip_model.runtime_note,
                "runtime_origin": self.clip_model.runtime_origin}

    async def predict(self, clip, parent: tuple | None = None, deadline: float | None = None,
                      stream: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """One clip's (probabilities, embedding), from a batch with whatever other clips wait. `parent`
        (a trace context, span attributes): where its `reelflow.model_batch` span goes; `deadline`
        (wall clock) and `stream`: a live window, which goes first, fairly among streams, and is
        not run (its result is None) when it cannot be done by then."""
        return await self.batcher.submit(clip, parent, deadline, stream)

    async def __call__(self, clip, carried: tuple | None = None, deadline: float | None = None,
                       stream: str | None = None):
        """From another process: a decoder (`carried`: the clip's trace context as a W3C carrier) or a
        live stream (`deadline`: when its window is too late to be worth classifying; `stream`: its name)."""
        if carried is None:
            return await self.predict(clip, None, deadline, stream)
        carrier, attributes = carried
        return await self.predict(clip, (telemetry.context_from(carrier), attributes), deadline, stream)

    async def classify_job(self, spec_json: str, skip: list[int], sources, threads: int = 0):
        """A whole job, decoded here (streamed back: its segment count, then a result per segment);
        its clips batch with every other clip this replica is given."""
        async for item in job_results(self, spec_json, skip, sources, threads):
            yield item

    def _forward_batch(self, clips: list) -> list[tuple[np.ndarray, np.ndarray]]:
        import torch

        probs, features = self.clip_model.predict(torch.stack([self._model_input(c) for c in clips]))
        return list(zip(probs.numpy(), features.numpy()))

    def _model_input(self, clip):
        import torch  # torch: always inside methods, after __init__ set OMP_WAIT_POLICY

        from pipelines.transforms import CropTaps, finish_on

        if isinstance(clip, torch.Tensor):  # decoded in this process
            return clip
        if isinstance(clip, np.ndarray):  # float32 model input, read from the object store without a copy
            return torch.from_numpy(clip)
        return finish_on(CropTaps.from_arrays(clip), self.clip_model.device, self.clip_model.spec)

    def batch_size_counts(self) -> dict[int, int]:
        return dict(sorted(self.batcher.batch_sizes.items()))

    def pid(self) -> int:
        return os.getpid()


def payload_for(frames: np.ndarray, model, clip_format: str):
    """What a decoder sends a replica for one clip's sampled frames, in the replica's wire format."""
    import torch  # in the decoding process only: `reelflow up` imports this module without torch

    from pipelines.transforms import clip_taps, preprocess_clip

    if clip_format == "uint8":
        return clip_taps(torch.as_tensor(frames), model).as_arrays()
    return preprocess_clip(frames, model).numpy()
