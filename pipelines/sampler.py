"""Cut a decoded video into segments and sample T frames from each, in one streamed pass.

Only the frames a segment samples are converted to RGB; the rest stay in YUV and are released as
soon as no open segment can use them, so memory is bounded by one clip's worth of frames,
whatever the video's length.

    >>> for clip in sample_clips("clip.mp4", clip_s=1.6, num_frames=4):   # doctest: +SKIP
    ...     clip.segment.start_s, clip.frames.shape                       # (0.0, (4, 256, 340, 3))
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Container, Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

from pipelines.decode import Video, open_video
from pipelines.segments import Segment, pts_bounds, plan_segments


@dataclass
class SampledClip:
    segment: Segment
    frames: np.ndarray | None  # (T, H, W, 3) uint8 RGB; None when the segment holds no frame
    frame_count: int  # frames of the video inside the segment, before subsampling
    pts: list[int]  # stream pts of the sampled frames, in order


def subsample_indices(n: int, num_samples: int) -> list[int]:
    """PyTorchVideo's uniform temporal subsample: floor(linspace(0, n-1, T)), in float32 like it."""
    return torch.linspace(0, n - 1, num_samples).clamp(0, n - 1).long().tolist()


def sample_clips(
    source: str | os.PathLike | Video,
    clip_s: float,
    num_frames: int,
    stride_s: float | None = None,
    *,
    all_frames: bool = False,
    skip: Container[int] = (),
    open_options: dict[str, str] | None = None,
    threads: int = 0,
    limits=None,
    skip_unsampled: bool = True,
) -> Iterator[SampledClip]:
    """Yield one SampledClip per segment, in segment order.

    `all_frames=True` returns every frame of the segment instead of `num_frames` of them.
    Segments whose index is in `skip` (already done elsewhere) are left out. `open_options` go to
    FFmpeg (e.g. a protocol whitelist); `threads` are FFmpeg's decoding threads (0: one per core);
    `limits` (a SourcePolicy) bounds pixels, frames and duration while decoding.

    `skip_unsampled`: for a local file, the frames each segment will sample are known before
    decoding, from the packets' timestamps (a demux-only pass); frames no segment samples and no
    frame depends on (non-reference B-frames) are then not decoded: 15-20% less decoding on
    B-frame video, none on video without B-frames. The clips are the same, bit for bit; where the
    plan turns out wrong (a damaged packet, timestamps the decoder changes) the video is decoded
    again from its start without a plan, and the segments not yet given come from that pass.
    """
    if isinstance(source, Video):
        yield from _sample(source, clip_s, num_frames, stride_s, all_frames, skip, None, set())
        return
    done: set[int] = set()
    for planned in (skip_unsampled and not all_frames, False):
        video = open_video(source, options=open_options, threads=threads, limits=limits)
        try:
            times = video.packet_times() if planned else None
            yield from _sample(video, clip_s, num_frames, stride_s, all_frames, set(skip) | done, times, done)
            return
        except _PlanFailed:
            continue  # decode it again, every frame, for the segments not yielded yet
        finally:
            video.close()


def plan_video(video: Video, clip_s: float, stride_s: float | None = None) -> list[Segment]:
    """The segments of an open video (DESIGN.md's segment rule)."""
    return plan_segments(video.duration_s(), clip_s, stride_s)


class _PlanFailed(Exception):
    """The frames decoded are not those the packets' timestamps promised."""


def _sample(video: Video, clip_s, num_frames, stride_s, all_frames, skip, times, done: set[int]
            ) -> Iterator[SampledClip]:
    """The segments' clips; `times` (Video.packet_times), when given, plans which frames to decode;
    `done` gets the index of every segment yielded."""
    info = video.info
    segments = [s for s in plan_video(video, clip_s, stride_s) if s.index not in skip]
    # Segments are sorted by start and by end, so the open ones are segments[next_seg:] and the
    # earliest frame any of them can use is bounds[next_seg][0].
    bounds = [pts_bounds(s, info.time_base, info.start_pts) for s in segments]
    window: dict[int, av.VideoFrame] = {}  # pts -> frame, frames the open segments may sample
    next_seg = 0

    # with a plan: each segment's frames are times[a:b], known before decoding
    spans = [] if times is None else [(bisect_left(times, lo), bisect_left(times, hi)) for lo, hi in bounds]

    def inside_of(i: int) -> list[int]:
        lo, hi = bounds[i]
        if times is None:
            return sorted(p for p in window if lo <= p < hi)
        planned = list(times[slice(*spans[i])])
        expected = set(planned)
        if any(p not in window for p in picks_of(planned)) or any(
                lo <= p < hi and p not in expected for p in window):
            raise _PlanFailed
        return planned

    def picks_of(inside: list[int]) -> list[int]:
        if all_frames or not inside:
            return inside
        return [inside[k] for k in subsample_indices(len(inside), num_frames)]

    def close(i: int) -> SampledClip:
        inside = inside_of(i)
        done.add(segments[i].index)
        if not inside:
            return SampledClip(segments[i], None, 0, [])
        picks = picks_of(inside)
        rgb = {p: window[p].to_ndarray(format="rgb24") for p in set(picks)}
        return SampledClip(segments[i], np.stack([rgb[p] for p in picks]), len(inside), picks)

    keep = None if times is None else {p for span in spans for p in picks_of(list(times[slice(*span)]))}
    for pts, frame in video.frames(keep):
        while next_seg < len(segments) and pts >= bounds[next_seg][1]:
            yield close(next_seg)
            next_seg += 1
            if next_seg < len(segments):
                first = bounds[next_seg][0]
                for p in [p for p in window if p < first]:
                    del window[p]
        if next_seg == len(segments):
            break
        if pts >= bounds[next_seg][0]:
            window[pts] = frame  # a repeated pts replaces the earlier frame, as in the reference
    while next_seg < len(segments):
        yield close(next_seg)
        next_seg += 1
