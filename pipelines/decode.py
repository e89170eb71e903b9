"""Streamed video decoding with PyAV: one pass, threaded, frames left in YUV until needed.

    >>> with open_video("clip.mp4") as video:              # doctest: +SKIP
    ...     print(video.info.duration_s)
    ...     for pts, frame in video.frames():
    ...         rgb = frame.to_ndarray(format="rgb24")      # only for frames a segment samples
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Container, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av

from pipelines.errors import VideoError

NETWORK_TIMEOUTS_S = (15.0, 30.0)  # opening, and each read, of a network source
MAX_BAD_PACKETS = 50  # damaged packets skipped before a video counts as corrupt
MAX_PLANNED_FRAMES = 1_000_000  # packet_times of longer videos (9 h at 30 fps): not worth 8 bytes a frame


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream."""

    width: int
    height: int
    codec: str
    time_base: Fraction
    start_pts: int  # pts of the stream's first frame; times are relative to it
    fps: float | None  # average rate, informational (the segment rule uses timestamps)
    duration_s: float | None  # None when neither stream nor container knows it
    frames: int | None = None  # as the container says; None when it does not

    def seconds(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base)


class Video:
    """An open video: `info`, then `frames()` once. Close it (or use `with`).

    `limits` (a pipelines.sources.SourcePolicy) bounds pixels, frames and duration while decoding,
    whatever the headers said; network sources get open and read timeouts.
    """

    def __init__(self, source: str, *, threads: int = 0, options: dict[str, str] | None = None, limits=None):
        self.source = source
        self.limits = limits
        self._container, self._stream = open_container(source, options=options, threads=threads)
        self._step = frame_step(self._container, self._stream)  # raw H.264/HEVC: frames numbered
        self.info = self._read_info()

    def _read_info(self) -> VideoInfo:
        s = self._stream
        time_base = s.time_base or Fraction(1, 1)
        start_pts = s.start_time if s.start_time is not None else 0
        if s.duration is not None:
            duration = float(s.duration * time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            width=s.codec_context.width,
            height=s.codec_context.height,
            codec=s.codec_context.name,
            time_base=time_base,
            start_pts=start_pts,
            fps=float(1 / (self._step * time_base)) if self._step else float(s.average_rate or 0) or None,
            duration_s=duration,
            frames=s.frames or None,
        )

    def frames(self, keep: Container[int] | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames in presentation order as (pts, frame); frames without a pts are skipped.

        `keep`: the pts of the frames wanted. Any other frame that no frame depends on (the decoder
        knows: a non-reference B-frame, say) is not decoded at all; the frames kept, and every frame
        they are predicted from, decode exactly as without it.

        A damaged packet is skipped, as FFmpeg's own tools do (its frame, and those predicted from
        it, may come out damaged or not at all); past MAX_BAD_PACKETS the video counts as corrupt."""
        count = bad = numbered = 0
        context = self._stream.codec_context
        skipping = False
        try:
            for packet in self._container.demux(self._stream):
                if keep is not None and skipping != (packet.pts is not None and packet.pts not in keep):
                    skipping = not skipping
                    context.skip_frame = "NONREF" if skipping else "DEFAULT"
                try:
                    decoded = packet.decode()
                except av.InvalidDataError as e:
                    bad += 1
                    if bad > MAX_BAD_PACKETS:
                        raise VideoError(f"cannot decode {self.source!r}: over {MAX_BAD_PACKETS} damaged packets "
                                         f"({_reason(e)}); the file is corrupt") from None
                    continue
                for frame in decoded:
                    if self._step:  # in presentation order, as the decoder gives them
                        frame.pts, numbered = numbered * self._step, numbered + 1
                    if self.limits is not None:
                        count += 1
                        self._check(frame, count)
                    if frame.pts is not None:
                        yield frame.pts, frame
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode {self.source!r} ({_reason(e)}); the file may be corrupt") from None

    def _check(self, frame: av.VideoFrame, count: int) -> None:
        """The limits (a SourcePolicy), frame by frame: a header can lie, a stream can change size or run on."""
        self.limits.check_video(self.source, frame.width, frame.height,
                                self.info.seconds(frame.pts) if frame.pts is not None else None, count)

    def packet_times(self) -> array | None:
        """The pts of every frame the video will decode, sorted, from a demux-only pass over a local
        file (no decoding: fast); None where packets cannot tell (not a regular file: a network
        source would be read twice; a packet without pts; two packets with one pts; a demuxing
        error; over MAX_PLANNED_FRAMES)."""
        if not os.path.isfile(self.source):
            return None
        times = array("q")
        try:
            with av.open(self.source) as container:
                for packet in container.demux(container.streams.video[0]):
                    if packet.size == 0:  # the demuxer's end-of-stream packet
                        continue
                    if packet.pts is None:
                        return None
                    times.append(packet.pts)
                    if len(times) > MAX_PLANNED_FRAMES:
                        return None
        except (av.FFmpegError, OSError, IndexError):
            return None
        times = array("q", sorted(times))
        if any(a == b for a, b in zip(times, times[1:])):
            return None
        return times

    def duration_s(self) -> float:
        """The stream's duration; for containers that don't record one, demux (no decoding) to the end."""
        if self.info.duration_s is not None:
            return self.info.duration_s
        end = None
        with av.open(self.source) as container:
            if self._step:  # frames numbered: a frame per packet
                return sum(1 for p in container.demux(container.streams.video[0]) if p.size) * self.info.seconds(
                    self._step)
            for packet in container.demux(container.streams.video[0]):
                if packet.pts is not None:
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
        return self.info.seconds(end) if end is not None else 0.0

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_container(source: str | os.PathLike, *, options: dict[str, str] | None = None, threads: int = 0,
                   what: str = "") -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """av.open with one-line errors: the container and its first video stream, set to decode with
    frame and slice threads (`threads=0`: FFmpeg picks one per core). `what` names the source in
    messages (e.g. "--video ")."""
    source = os.fspath(source)
    timeout = NETWORK_TIMEOUTS_S if "://" in source else None
    try:
        container = av.open(source, options=options or {}, timeout=timeout)
    except FileNotFoundError:
        raise VideoError(f"cannot read {what}{source!r}: no such file; check the path") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"cannot read {what}{source!r} as video ({_reason(e)}); is it a video file?") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{what}{source!r} has no video stream; pass a video file")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return container, stream


def frame_step(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int | None:
    """For a stream whose format carries no timestamps at all (raw H.264 or HEVC, no container):
    the time between frames, in the stream's time base, to number its frames by (as FFmpeg's own
    tools do: a constant rate, the one the bitstream states, else FFmpeg's guess, else 25 fps).
    None for every other stream: its frames carry their own times."""
    if not container.format.flags & av.format.Flags.no_timestamps.value or not stream.time_base:
        return None
    rate = stream.guessed_rate or stream.average_rate or Fraction(25)
    return max(1, round(1 / (rate * stream.time_base)))


def numbered(frames: Iterator[av.VideoFrame], step: int | None) -> Iterator[av.VideoFrame]:
    """Decoded frames (presentation order), with `step` (frame_step) each given its time: pts n * step
    and duration step."""
    for n, frame in enumerate(frames):
        if step:
            frame.pts, frame.duration = n * step, step
        yield frame


def open_video(source: str | os.PathLike, **kwargs) -> Video:
    return Video(os.fspath(source), **kwargs)


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
