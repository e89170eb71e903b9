"""The segment rule: which time spans a video is cut into, and which frames each one gets.

Segment i covers [i*stride, i*stride + clip); a tail segment ending at the video's end is added
when video remains after the last full one; a video shorter than a clip gives one segment.
A frame at presentation time t belongs to [start, end) when start <= t < end, computed in the
stream's time base exactly as PyTorchVideo's `EncodedVideo.get_clip` does.

    >>> [(s.start_s, s.end_s) for s in plan_segments(4.0, clip_s=1.6)]
    [(0.0, 1.6), (1.6, 3.2), (2.4, 4.0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

# Boundaries are rounded to the microsecond so that 3 * 1.6 is reported (and used) as 4.8.
DECIMALS = 6


@dataclass(frozen=True)
class Segment:
    index: int
    start_s: float
    end_s: float


def plan_segments(duration_s: float, clip_s: float, stride_s: float | None = None) -> list[Segment]:
    """All segments of a video of `duration_s` seconds, in order."""
    stride = clip_s if stride_s is None else stride_s
    if clip_s <= 0 or stride <= 0:
        raise ValueError("clip and stride must be positive")
    duration = round(max(duration_s, 0.0), DECIMALS)
    if duration <= clip_s:
        return [Segment(0, 0.0, duration if duration > 0 else round(clip_s, DECIMALS))]
    segments: list[Segment] = []
    i = 0
    while True:
        start = round(i * stride, DECIMALS)
        end = round(i * stride + clip_s, DECIMALS)
        if end > duration:
            break
        segments.append(Segment(i, start, end))
        i += 1
    last = segments[-1]
    if last.end_s < duration:
        tail_start = round(duration - clip_s, DECIMALS)
        if tail_start > last.start_s:
            segments.append(Segment(i, tail_start, duration))
    return segments


def pts_bounds(segment: Segment, time_base: Fraction, start_pts: int) -> tuple[int, int]:
    """[lo, hi) in stream pts: the frames with lo <= pts < hi belong to the segment.

    Same arithmetic as pytorchvideo.data.utils.secs_to_pts(round_mode="ceil"), so a frame lying
    exactly on a boundary falls on the same side as in the reference.
    """
    tb = float(time_base)
    return (
        math.ceil(segment.start_s / tb) + start_pts,
        math.ceil(segment.end_s / tb) + start_pts,
    )
