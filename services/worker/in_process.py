"""The data plane in this process: the pipeline of `reelflow up --no-ray`, `process --no-ray`, and
of the tests that need no Ray. One job at a time; live streams on threads of this process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import ReelflowError
from pipelines.sources import SourcePolicy, open_checked
from services.store.jobs import JobSpec
from services.store.streams import StreamRegistry, StreamSpec
from services.worker.pipeline import StreamHandle

MAX_LOADED_MODELS = 2  # (model, weights) pairs an in-process pipeline keeps in memory


class InProcessPipeline:
    """The data plane in this process, one job at a time."""

    capacity = 1

    def __init__(self, device: str = "cpu", sources: SourcePolicy | None = None, runtime: str = "auto",
                 cache_dir: Path | None = None):
        """`runtime`: where forward passes run when a job does not say (pipelines/runtimes); `cache_dir`:
        where converted models are kept."""
        self.device = device
        self.sources = sources or SourcePolicy()
        self.runtime = runtime
        self.cache_dir = cache_dir
        self._classifiers: OrderedDict = OrderedDict()

    def prepare(self, model: str, weights: str, runtime: str = "auto") -> None:
        self._classifier(model, weights, runtime)

    def segments(self, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        """The job's number of segments, then a result dict per segment not in `skip`."""
        clf = self._classifier(spec.model, spec.weights, spec.runtime)
        clf.topk = min(spec.topk, len(clf.labels))
        source, options, total = open_checked(spec.source, self.sources, clf.spec.clip_seconds, spec.stride_s)
        yield total
        for seg in clf.iter_video(source, spec.stride_s, skip=skip, open_options=options, limits=self.sources):
            yield seg.to_dict(embedding="base64" if spec.embeddings else None)

    def is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, ReelflowError)

    def start_stream(self, spec: StreamSpec, redis_url: str, owner: str) -> StreamHandle:
        """Run a live stream on a thread of this process, with this process's model."""
        from pipelines.transforms import preprocess_clip  # torch loads with the first model, not with the CLI
        from services.worker.stream_runner import Done, StreamRunner, ThreadHandle  # PyAV: with the first stream

        policy = self.sources.for_streams()
        url = policy.check(spec.url)
        clf = self._classifier(spec.model, spec.weights)

        def classify(clip, deadline: float | None = None):  # the runner dropped what was late and superseded
            probs, features = clf.clip_model.predict(clip[None])
            return Done((probs[0].numpy(), features[0].numpy()))

        runner = StreamRunner(spec, StreamRegistry.at(redis_url), owner, clf.labels,
                              clf.clip_model.weights_id, prepare=lambda frames: preprocess_clip(frames, clf.spec),
                              classify=classify, open_options=policy.ffmpeg_options(url))
        return ThreadHandle(runner)

    def describe(self) -> list[dict]:
        """The models loaded here: one replica each, in this process."""
        return [{"model": m, "weights": w, "replicas": 1, "serving": f"in-process:{os.getpid()}:{r}",
                 "runtime": clf.clip_model.runtime, "runtime_note": clf.clip_model.runtime_note,
                 "runtime_origin": clf.clip_model.runtime_origin}
                for (m, w, r), clf in list(self._classifiers.items())]

    def _classifier(self, model: str, weights: str, runtime: str = "auto"):
        from pipelines.classifier import ActionClassifier  # torch loads with the first model, not with the CLI

        runtime = runtime if runtime != "auto" else self.runtime
        key = (model, weights, runtime)
        if key not in self._classifiers:
            self.sources.check_model(model)
            self._classifiers[key] = ActionClassifier(model, weights=weights, device=self.device, runtime=runtime,
                                                      cache_dir=self.cache_dir)
            while len(self._classifiers) > MAX_LOADED_MODELS:
                self._classifiers.popitem(last=False)
        self._classifiers.move_to_end(key)
        return self._classifiers[key]

    def lost(self) -> str | None:
        return None  # it is this process: if it is gone, so is the question

    restartable = True

    def metrics_url(self) -> str | None:
        return None  # every metric is this process's

    def shutdown(self) -> None:
        """Nothing to stop: the models go with this process."""
