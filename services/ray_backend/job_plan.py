"""A job made ready to decode, shared by both Ray pipelines (decoder actors and fused replicas):
its spec and model, the labels and top-k of its results, the checked source and its segment count.

    >>> plan = JobPlan.open(spec_json, sources, num_classes=400, weights_id="none ...")  # doctest: +SKIP
    >>> for clip in plan.clips(skip=set(), threads=0): ... plan.result(clip, (probs, features))
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipelines.labels import labels_for
from pipelines.models import ModelSpec, get_spec
from pipelines.sources import SourcePolicy, open_checked
from services import metrics, telemetry
from services.store.jobs import JobSpec


@dataclass
class JobPlan:
    spec: JobSpec
    model: ModelSpec
    labels: list[str]
    topk: int
    weights_id: str
    source: str  # as checked by the source policy
    options: dict[str, str]  # FFmpeg options from the policy
    total: int  # segments
    limits: SourcePolicy  # enforced again while decoding
    parent: object = field(default=None)  # the job span's context, when traces are recorded

    @classmethod
    def open(cls, spec_json: str, sources: SourcePolicy, num_classes: int, weights_id: str,
             classes: list[str] | None = None) -> JobPlan:
        """Check the job's source against the policy and count its segments (opens the video once)."""
        spec = JobSpec.model_validate_json(spec_json)
        model = get_spec(spec.model)
        labels = labels_for(num_classes, classes=classes)  # classes: a trained checkpoint's names
        source, options, total = open_checked(spec.source, sources, model.clip_seconds, spec.stride_s)
        parent = telemetry.context_from(spec.trace) if spec.trace and telemetry.enabled() else None
        return cls(spec, model, labels, min(spec.topk, len(labels)), weights_id, source, options, total, sources,
                   parent)

    def clips(self, skip: set[int], threads: int) -> Iterator:
        """The segments' clips, each one's decoding time (spent in the sampler) recorded: a metric, and
        a `reelflow.decode` span in the job's trace."""
        from pipelines.sampler import sample_clips  # PyAV: loads in the decoding process, not in `reelflow up`

        clips = sample_clips(self.source, self.model.clip_seconds, self.model.num_frames, self.spec.stride_s,
                             skip=skip, open_options=self.options, threads=threads, limits=self.limits)
        while True:
            started, started_ns = time.perf_counter(), time.time_ns()
            try:
                clip = next(clips)
            except StopIteration:
                return
            metrics.observe("reelflow_decode_seconds", time.perf_counter() - started, model=self.spec.model)
            if self.parent is not None:
                telemetry.record_span("reelflow.decode", self.parent, started_ns, time.time_ns(),
                                      {"reelflow.segment": clip.segment.index})
            yield clip

    def transform(self, clip, fn):
        """`fn(clip.frames)` (the transform to model input), in a `reelflow.transform` span when traced."""
        if self.parent is None:
            return fn(clip.frames)
        with telemetry.tracer().start_as_current_span("reelflow.transform", context=self.parent,
                                                      attributes={"reelflow.segment": clip.segment.index}):
            return fn(clip.frames)

    def batch_parent(self, clip) -> tuple | None:
        """What the replica's batcher needs to record the clip's `reelflow.model_batch` span."""
        return None if self.parent is None else (self.parent, {"reelflow.segment": clip.segment.index})

    def result(self, clip, output) -> dict:
        """A segment's result record; `output` is (probabilities, embedding), or None for an empty segment."""
        from pipelines.classifier import clip_result  # torch: loads in the replica, not in `reelflow up`

        return clip_result(self.spec.source, clip, self.spec.model, self.weights_id, self.labels, self.topk, output
                           ).to_dict(embedding="base64" if self.spec.embeddings else None)
