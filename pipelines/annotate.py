"""Burning segment labels into a video: every frame gets its segment's top labels and scores.

    >>> annotate_video("video.mp4", segments, "annotated.mp4")      # doctest: +SKIP
    AnnotateStats(frames=280, width=340, height=256)

`segments` are the results of `reelflow classify` (`SegmentResult`s, or their dicts): anything
with `start_s`, `end_s`, `labels` and `scores`. The output is H.264 (libx264) in MP4, in the
source's time base with the source's timestamps, so it has the same frames at the same times: the
frame count and frame rate match exactly (an .mkv output rounds times to Matroska's milliseconds).
Audio is not copied.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.decode import frame_step, numbered, open_container
from pipelines.errors import VideoError

LINES = 3  # labels drawn per frame
FONT_SHARE = 1 / 24  # font height as a share of the frame height: readable at 240p and at 4K alike
MIN_FONT_PX = 11
BOX_ALPHA = 150  # the caption box's darkness (0-255): the video stays visible under it
BAR_RGBA = (64, 196, 160, 170)  # the score gauge behind each label
CRF, PRESET = "20", "veryfast"  # visually lossless enough to read, fast on two cores
REORDER_FRAMES = 8  # frames whose timestamps may come out of order (B-frames in AVI)


@dataclass(frozen=True)
class AnnotateStats:
    frames: int
    width: int
    height: int


def segment_at(starts: Sequence[float], ends: Sequence[float], t: float) -> int | None:
    """The index of the segment showing at time t: the latest one started by t and not yet over
    (with overlapping segments, the newer one takes over at its start); None in a gap.

    >>> segment_at([0.0, 1.6, 3.2], [1.6, 3.2, 4.0], 1.7)
    1
    >>> segment_at([0.0, 2.0], [1.0, 3.0], 1.5) is None
    True
    """
    i = bisect.bisect_right(starts, t) - 1
    return i if i >= 0 and t < ends[i] else None


def caption(labels: Sequence[str], scores: Sequence[float], frame_width: int, frame_height: int) -> np.ndarray:
    """The caption box (RGBA uint8, H x W x 4) for one segment: a line per label with its score and
    a gauge as long as the score, sized to the frame height.

    >>> caption(["abseiling", "archery"], [0.8, 0.1], 320, 240).shape[2]
    4
    """
    font_px = max(MIN_FONT_PX, round(frame_height * FONT_SHARE))
    font = _font(font_px)
    pad, line_h = max(2, font_px // 3), round(font_px * 1.4)
    rows = [(label, f"{score:.2f}") for label, score in zip(labels[:LINES], scores[:LINES])] or [("(no frames)", "")]
    score_w = max(font.getbbox(s)[2] for _, s in rows)
    max_w = max(1, frame_width - 2 * pad)  # never wider than the frame
    label_w = min(max(font.getbbox(label)[2] for label, _ in rows), max_w - score_w - 6 * pad)
    width = min(max_w, label_w + score_w + 6 * pad)  # a gap of 2 pads between label and score
    height = max(1, min(frame_height - 2 * pad, len(rows) * line_h + 2 * pad))
    box = Image.new("RGBA", (width, height), (0, 0, 0, BOX_ALPHA))
    draw = ImageDraw.Draw(box)
    # white with a dark outline: legible over the gauge and over bright video alike
    ink = dict(font=font, fill=(255, 255, 255, 255), stroke_width=max(1, font_px // 14), stroke_fill=(0, 0, 0, 255))
    for row, ((label, score), value) in enumerate(zip(rows, list(scores[:LINES]) or [0.0])):
        top = pad + row * line_h
        gauge = max(0, round((width - 2 * pad) * min(max(float(value), 0.0), 1.0)))
        if gauge:
            draw.rectangle([pad, top + 1, pad + gauge, top + line_h - 2], fill=BAR_RGBA)
        text = _fit(label, font, label_w)
        draw.text((2 * pad, top + line_h / 2), text, anchor="lm", **ink)
        draw.text((width - 2 * pad, top + line_h / 2), score, anchor="rm", **ink)
    return np.asarray(box)


class _Overlay:
    """A caption ready to blend: premultiplied colour and the share of the frame kept under it."""

    def __init__(self, rgba: np.ndarray, margin: int):
        alpha = rgba[..., 3:4].astype(np.float32) / 255
        self.colour = rgba[..., :3].astype(np.float32) * alpha
        self.keep = 1.0 - alpha
        self.margin = margin

    def blend(self, frame: np.ndarray) -> None:
        region = frame[self.margin:self.margin + self.keep.shape[0], self.margin:self.margin + self.keep.shape[1]]
        h, w = region.shape[:2]  # on a tiny frame the box may reach past the edge: cut it there
        region[...] = (region * self.keep[:h, :w] + self.colour[:h, :w] + 0.5).astype(np.uint8)


def annotate_video(source: str | os.PathLike, segments: Sequence, output: str | os.PathLike, *,
                   progress: Callable[[int, int | None], None] | None = None) -> AnnotateStats:
    """Write `output` (H.264 MP4): the source's frames, each with its segment's labels drawn on.

    `progress(frames_done, frames_total_or_None)` is called now and then. Odd frame sizes lose
    their last row or column (H.264 4:2:0 needs even sizes)."""
    rows = sorted((_fields(s) for s in segments), key=lambda s: s[0])
    starts, ends = [s[0] for s in rows], [s[1] for s in rows]
    name = os.fspath(source)
    inp, ins = open_container(name)
    with inp:
        width, height = ins.codec_context.width // 2 * 2, ins.codec_context.height // 2 * 2
        if width < 2 or height < 2:
            raise VideoError(f"{name!r} is too small to annotate ({width}x{height})")
        time_base = ins.time_base or Fraction(1, 1000)
        start_pts = ins.start_time if ins.start_time is not None else 0
        # MP4 keeps a stream's start in an edit list in the movie's time scale (default 1/1000 s): in
        # the source's scale, a start offset stays exact too
        target = os.fspath(output)
        mp4 = target.lower().endswith((".mp4", ".m4v", ".mov"))
        if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
            raise VideoError(f"cannot write {target!r}: no such directory")
        try:
            out = av.open(target, "w", options={"movie_timescale": str(time_base.denominator)} if mp4 else None)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot write {target!r} ({e}); give a .mp4 path") from None
        with out:
            step = frame_step(inp, ins)  # raw H.264: its frames numbered at the rate it states
            rate = 1 / (step * time_base) if step else ins.average_rate or ins.guessed_rate or 30
            outs = out.add_stream("libx264", rate=rate)
            outs.width, outs.height, outs.pix_fmt = width, height, "yuv420p"
            # The source's time base and timestamps, unchanged: same frames at the same times.
            outs.time_base = outs.codec_context.time_base = time_base
            # no B-frames: no reordering delay, so the container needs no edit list and pts stay as they were
            outs.options = {"crf": CRF, "preset": PRESET, "bf": "0"}
            overlays: dict[int, _Overlay] = {}
            margin = max(2, round(height * FONT_SHARE / 3))
            done = 0
            try:
                for frame, pts in _rising_pts(numbered(inp.decode(ins), step)):
                    rgb = frame.to_ndarray(format="rgb24")[:height, :width]
                    i = segment_at(starts, ends, float((pts - start_pts) * time_base))
                    if i is not None:
                        if i not in overlays:
                            overlays[i] = _Overlay(caption(rows[i][2], rows[i][3], width, height), margin)
                        overlays[i].blend(rgb)
                    drawn = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                    drawn.pts, drawn.time_base = pts, time_base
                    if frame.duration:  # the last frame's duration sets the container's rate of a VFR video
                        drawn.duration = frame.duration
                    out.mux(outs.encode(drawn))
                    done += 1
                    if progress is not None and done % 25 == 0:
                        progress(done, ins.frames or None)
                out.mux(outs.encode(None))
            except av.FFmpegError as e:
                raise VideoError(f"cannot decode {name!r} ({e}); the file may be corrupt") from None
    if progress is not None:
        progress(done, done)
    return AnnotateStats(frames=done, width=width, height=height)


def _rising_pts(frames: Iterator[av.VideoFrame]) -> Iterator[tuple[av.VideoFrame, int]]:
    """Frames as decoded (presentation order) with strictly rising pts, as encoders need: the
    source's own where they rise. Containers without presentation times (AVI) label B-frames with
    decode-order times (1, 2, 4, 3, 5...): sorting the labels over a few frames puts them back."""
    window: deque = deque()
    labels: list[int] = []
    highest = last = None
    for frame in frames:
        pts = frame.pts if frame.pts is not None else (highest + 1 if highest is not None else 0)
        highest = pts if highest is None else max(highest, pts)
        window.append(frame)
        heapq.heappush(labels, pts)
        if len(window) > REORDER_FRAMES:
            last = max(heapq.heappop(labels), last + 1 if last is not None else -(1 << 62))
            yield window.popleft(), last
    while window:
        last = max(heapq.heappop(labels), last + 1 if last is not None else -(1 << 62))
        yield window.popleft(), last


def _fields(segment) -> tuple[float, float, list[str], list[float]]:
    get = segment.get if isinstance(segment, Mapping) else lambda k: getattr(segment, k)
    return float(get("start_s")), float(get("end_s")), list(get("labels")), [float(x) for x in get("scores")]


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)  # Pillow's own font: the same on every machine


def _fit(text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if font.getbbox(text)[2] <= width:
        return text
    while text and font.getbbox(text + "…")[2] > width:
        text = text[:-1]
    return text + "…"
