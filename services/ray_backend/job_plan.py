"""A job made ready to decode, shared by both Ray pipelines (decoder actors and fused replicas):
its spec and model, the labels and top-k of its results, the checked source and its segment count.

    >>> plan = JobPlan.open(spec_json, sources, num_classes=400, weights_id="none ...")  # doctest: +SKIP
    >>> for clip in plan.clips(skip=set(), threads=0): ... plan.result(clip, (probs, features))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipelines.labels import labels_for
from pipelines.models import ModelSpec, get_spec
from pipelines.sources import SourcePolicy, open_checked
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

    @classmethod
    def open(cls, spec_json: str, sources: SourcePolicy, num_classes: int, weights_id: str,
             classes: list[str] | None = None) -> JobPlan:
        """Check the job's source against the policy and count its segments (opens the video once)."""
        spec = JobSpec.model_validate_json(spec_json)
        model = get_spec(spec.model)
        labels = labels_for(num_classes, classes=classes)  # classes: a trained checkpoint's names
        source, options, total = open_checked(spec.source, sources, model.clip_seconds, spec.stride_s)
        return cls(spec, model, labels, min(spec.topk, len(labels)), weights_id, source, options, total, sources)

    def clips(self, skip: set[int], threads: int) -> Iterator:
        from pipelines.sampler import sample_clips  # PyAV: loads in the decoding process, not in `reelflow up`

        return sample_clips(self.source, self.model.clip_seconds, self.model.num_frames, self.spec.stride_s,
                            skip=skip, open_options=self.options, threads=threads, limits=self.limits)

    def result(self, clip, output) -> dict:
        """A segment's result record; `output` is (probabilities, embedding), or None for an empty segment."""
        from pipelines.classifier import clip_result  # torch: loads in the replica, not in `reelflow up`

        return clip_result(self.spec.source, clip, self.spec.model, self.weights_id, self.labels, self.topk, output
                           ).to_dict(embedding="base64" if self.spec.embeddings else None)
