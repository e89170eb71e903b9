"""What a report shows, as numbers: who holds each stretch of time, labels by total time, score
curves and the segment × segment similarity of embeddings. Plain numpy; the figures draw these.

    >>> bands(segments)[0]                    # doctest: +SKIP
    Band(index=0, start_s=0.0, end_s=1.6, label='arm wrestling', score=0.91)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.results import SegmentResult


@dataclass(frozen=True)
class Band:
    """The stretch of time a segment's top label holds on the timeline."""

    index: int
    start_s: float
    end_s: float
    label: str
    score: float


@dataclass(frozen=True)
class LabelTime:
    label: str
    seconds: float
    share: float  # of the time the segments cover
    segments: int  # segments it tops
    mean_score: float  # its mean score where it tops


def bands(segments: Sequence[SegmentResult]) -> list[Band]:
    """One band per segment, from its start to the next segment's start (or its own end, if
    sooner): overlapping segments (a stride shorter than the clip, the tail segment) share time
    without counting it twice; the newer segment takes over at its start."""
    out = []
    for i, s in enumerate(segments):
        end = min(s.end_s, segments[i + 1].start_s) if i + 1 < len(segments) else s.end_s
        label, score = (s.labels[0], s.scores[0]) if s.labels else ("(no frames)", 0.0)
        out.append(Band(s.index, s.start_s, max(end, s.start_s), label, score))
    return out


def label_times(segment_bands: Sequence[Band]) -> list[LabelTime]:
    """Top labels by the time they hold, longest first."""
    covered = sum(b.end_s - b.start_s for b in segment_bands) or 1.0
    by_label: dict[str, list[Band]] = {}
    for b in segment_bands:
        by_label.setdefault(b.label, []).append(b)
    rows = [LabelTime(label, seconds := sum(b.end_s - b.start_s for b in held), seconds / covered, len(held),
                      sum(b.score for b in held) / len(held)) for label, held in by_label.items()]
    return sorted(rows, key=lambda r: (-r.seconds, r.label))


def top_classes(segments: Sequence[SegmentResult], count: int = 5) -> list[str]:
    """The `count` labels with the highest scores summed over the segments (scores outside a
    segment's top k count as 0)."""
    totals: dict[str, float] = {}
    for s in segments:
        for label, score in zip(s.labels, s.scores):
            totals[label] = totals.get(label, 0.0) + score
    return sorted(totals, key=lambda label: (-totals[label], label))[:count]


def score_curves(segments: Sequence[SegmentResult], labels: Sequence[str]) -> dict[str, list[float | None]]:
    """Each label's score per segment; None where it is not in the segment's top k (a gap in the curve)."""
    return {label: [dict(zip(s.labels, s.scores)).get(label) for s in segments] for label in labels}


def similarity(segments: Sequence[SegmentResult]) -> np.ndarray | None:
    """Cosine similarity of the segments' embeddings (N x N), or None without embeddings.

    >>> a = SegmentResult("v", 0, 0, 1, "m", "w", [], [], np.array([1, 0], np.float32))
    >>> b = SegmentResult("v", 1, 1, 2, "m", "w", [], [], np.array([1, 1], np.float32))
    >>> similarity([a, b]).round(3).tolist()
    [[1.0, 0.707], [0.707, 1.0]]
    """
    if not segments or any(s.embedding is None or not s.embedding.size for s in segments):
        return None
    vectors = np.stack([np.asarray(s.embedding, np.float64) for s in segments])
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)  # an all-zero embedding is like nothing: similarity 0
    return np.clip(unit @ unit.T, -1.0, 1.0)
