"""Live video: a source that never ends (reconnecting when it drops), cut into sliding windows.

A `LiveSource` yields `LiveFrame`s from an RTSP/HTTP/UDP stream, a capture device, or a local file
played in real time (looped) as if it were a camera. Every open and every read has a timeout; a
source that fails, ends, or goes stale (no data for `stale_s`) is reopened after an exponential
backoff with jitter, and each gap and reconnect is counted in `stats`. Stream time is continuous
across reconnects: seconds since the source was first opened, following the frames' own
timestamps while connected (or their arrival, for a format that has none, like MJPEG over HTTP).
A capture device `/dev/videoN` is read through FFmpeg's v4l2; `format` names another demuxer
where probing cannot tell.

`live_windows` cuts the frames into windows of `clip_s` every `stride_s` and samples T frames of
each with the file path's rule, keeping only one window of frames (in YUV) in memory. Its windows
start `offset_s` into the stream: `window_phase` gives each stream an offset of its own, so that
the windows of cameras started together do not all close at the same moment and reach the model
in one burst (16 cameras in step wait for 16 forward passes at every window's end).

    >>> source = LiveSource("rtsp://cam1.local/stream", transport="tcp")     # doctest: +SKIP
    >>> for clip in live_windows(source.frames(stop), clip_s=1.6, num_frames=4):
    ...     clip.index, clip.start_s, clip.captured_at, clip.frames.shape
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipelines.decode import frame_step
from pipelines.decode_slots import DecodeSlots, Turn
from pipelines.errors import one_line
from pipelines.sampler import subsample_indices
from pipelines.shedding import GopRuns, Shedding
from pipelines.sources import DEVICE

MAX_SKIPPED_PACKETS = 250  # a skip ends at a keyframe, or after this many packets (a stream without any)
CHEAP_HOLD_S = 10.0  # a reader that fell `cheap_lag_s` behind decodes cheaply for at least this long
DRIFT = 0.001  # seconds per second a camera's clock may run slow against ours, not counted as lag
BEHIND_S = 0.1  # a reader this far behind has its next packets there already: it keeps its decode slot
GOP_ROOM = 1.25  # a GOP is left undecoded if it ends before the next window by this many of the longest recent GOPs
OVERSHOOT_S = 0.04  # a GOP left undecoded that ran this far past the next window's start cost that window frames
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtp://", "srt://", "tcp://")


TRANSPORTS = ("auto", "tcp", "udp")  # RTSP lower transport: auto tries TCP, then UDP


@dataclass
class LiveFrame:
    time_s: float  # stream time: seconds since the source was first opened, continuous over reconnects
    frame: av.VideoFrame
    arrived_at: float  # wall clock (time.time()) when it arrived: when decoded, less how far behind the reader was
    resumed: bool = False  # the first frame after frames skipped undecoded (`LiveSource.skip_to_keyframe`)
    skipped_from: float | None = None  # resumed: the stream time of the first frame skipped, where known
    after_gap: bool = False  # the first frame after the stream stopped and came back (a reconnect)


@dataclass
class LiveClip:
    index: int  # window number: window i covers [i * stride, i * stride + clip) in stream time
    start_s: float
    end_s: float
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    frame_count: int  # frames inside the window before sampling
    captured_at: float  # wall clock when its last frame arrived
    skipped_before: int = 0  # windows lost, just before this one, to frames skipped undecoded
    cut: bool = False  # cut short by a gap in the stream: frames only up to it, closed when the stream came back


@dataclass
class LiveStats:
    state: str = "connecting"  # connecting | live | waiting (backing off before a reconnect) | stopped
    connects: int = 0
    reconnects: int = 0
    gaps: int = 0  # times frames stopped coming (error, end, stale)
    frames: int = 0
    skipped: int = 0  # frames read but not decoded (skip_to_keyframe: the reader was behind; GOPs shed)
    behind: int = 0  # times the reader fell over `max_lag_s` behind the stream and skipped to a keyframe
    shed: int = 0  # GOPs left undecoded to shed the process's overload evenly (`Shedding`)
    cheap: int = 0  # GOPs decoded without the deblocking filter, the reader being behind (`cheap_lag_s`)
    unwanted: int = 0  # frames read but not decoded: whole GOPs between two windows (a stride over the clip)
    last_error: str = ""
    last_frame_at: float | None = None
    transport: str | None = None  # RTSP: the lower transport frames last came over (tcp or udp)

    def as_dict(self) -> dict:
        return {"state": self.state, "connects": self.connects, "reconnects": self.reconnects, "gaps": self.gaps,
                "frames": self.frames, "skipped": self.skipped, "behind": self.behind, "shed": self.shed,
                "cheap": self.cheap, "unwanted": self.unwanted,
                "last_error": self.last_error, "last_frame_at": self.last_frame_at,
                "transport": self.transport}


class LiveSource:
    """A video source read forever: reconnects with backoff; `frames(stop)` ends only when `stop` is set."""

    def __init__(self, url: str, *, transport: str = "auto", open_timeout_s: float = 10.0, stale_s: float = 5.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 15.0, loop: bool = True,
                 options: dict[str, str] | None = None, format: str | None = None, ring=None,
                 max_lag_s: float | None = None, cheap_lag_s: float | None = None,
                 decode_slots: DecodeSlots | None = None, shedding: Shedding | None = None):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        self.url = url
        self.transport = transport
        # RTSP's lower transport, in the order to try: `auto` tries TCP, then UDP (some cameras and
        # servers speak only one), and keeps to the one that worked until it stops working
        rtsp = url.startswith(("rtsp://", "rtsps://"))
        self._transports = (["tcp", "udp"] if transport == "auto" else [transport]) if rtsp else []
        self.open_timeout_s, self.stale_s = open_timeout_s, stale_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.loop = loop  # a local file starts over at its end (as a looping camera)
        self.options = dict(options or {})
        self.ring = ring  # a pipelines.recording.PacketRing fed with the encoded packets (evidence clips)
        # A reader that falls this far behind the stream (decoding slower than frames come, on a
        # machine short of CPU) skips to the next keyframe instead of piling up frames that are late
        # already: latency stays bounded, and the windows skipped are counted. None: never skips.
        self.max_lag_s = max_lag_s
        # Before that, a reader this far behind decodes its next GOPs (for at least CHEAP_HOLD_S)
        # without H.264/HEVC's deblocking filter (FFmpeg's skip_loop_filter): 20-27% less CPU a frame
        # for 640x360, at a PSNR of 34-40 dB against the filtered frames (benchmarks/streams.md).
        # A decoder takes that option only when it opens, so the reader switches decoders at a
        # keyframe. None: always decodes in full.
        self.cheap_lag_s = cheap_lag_s
        self._cheap_until = 0.0  # monotonic time the reader decodes cheaply until (at keyframes)
        # Shared by the readers of one process: at most that many decode at once, the model keeping
        # its cores; a reader that is behind keeps its slot for a quantum (pipelines/decode_slots).
        self.decode_slots = decode_slots
        self._lag = 0.0  # how far behind the stream the reader was at its last frame
        self.shedding = shedding  # shared by the process's readers: sheds GOPs evenly under overload
        self.gop_runs = GopRuns(shedding) if shedding is not None else None  # this reader's runs shed
        # where the skip that no frame has ended yet began (its first packet's time; -inf: unknown)
        self._pending_skip: float | None = None
        self.is_device = bool(DEVICE.match(url))
        # FFmpeg's demuxer, when probing cannot tell: a capture device is read through Video4Linux2.
        self.format = format or ("v4l2" if self.is_device else None)
        self.is_file = not url.startswith(NETWORK_SCHEMES) and not url.startswith("/dev/") and Path(url).is_file()
        self.stats = LiveStats()
        self._skip = False  # set from another thread: leave frames undecoded up to the next keyframe
        self._wanted_s: float | None = None  # stream time of the next frame a window wants (`wanted_from`)
        self._shift: float | None = None  # this connection's frame time less stream time (known at its first frame)

    def wanted_from(self, time_s: float) -> None:
        """No frame before stream time `time_s` is wanted (the next window starts there): a GOP that
        surely ends before it is read but not decoded. Windows that leave gaps between them (a stride
        over the clip's length: a label every 5 s, say) then cost the decoding of the GOPs they touch,
        not of the whole stream. Those frames are counted as `unwanted`, not as skipped. A GOP that
        runs on past where it was due would cost the next window its first frames: that window is
        dropped and counted as skipped (as after `skip_to_keyframe`), never published short."""
        self._wanted_s = time_s

    def skip_to_keyframe(self) -> None:
        """Read on without decoding up to the next keyframe (a camera's next GOP), from any thread.

        The source does it itself when its reader falls `max_lag_s` behind: skipping a whole GOP
        saves the decoding (most of a camera's cost) of frames that would be late anyway. The frame
        after the skip comes `resumed`, and `live_windows` drops the windows the skip cut into."""
        self._skip = True

    def frames(self, stop: threading.Event) -> Iterator[LiveFrame]:
        failures = 0
        # Where stream time 0 falls on the monotonic clock, from the frame that came most promptly:
        # the last frames before a gap can come late (a demuxer flushes them when the read times
        # out), so the latest frame's arrival would lose that much stream time over every gap.
        zero = None
        # The same, for measuring lag: how far a frame came after the most prompt one would have
        # (allowing the camera's clock DRIFT). A reader that keeps up has a lag near 0.
        prompt, prompt_at = None, 0.0
        gap = False  # frames stopped since the last one came
        carried = None  # stream time where a skip began that the last connection ended in (NaN: unknown)
        while not stop.is_set():
            self.stats.state = "connecting"
            first = None
            self._shift = None
            connects = self.stats.connects
            try:
                for t, frame, skipped_from in self._connection(stop):
                    now = time.monotonic()
                    if first is None:  # stream time goes on over a gap as the wall clock did
                        first = t
                        offset = 0.0 if zero is None else now - zero
                        self.stats.state, failures = "live", 0
                        self.stats.transport = self._transports[0] if self._transports else None
                        if self.ring is not None:
                            self.ring.timed(offset - first)
                        self._shift = first - offset  # frame time = stream time + shift, on this connection
                    time_s = offset + (t - first)
                    zero = now - time_s if zero is None else min(zero, now - time_s)
                    prompt = now - time_s if prompt is None else min(prompt + DRIFT * (now - prompt_at), now - time_s)
                    prompt_at, lag = now, now - time_s - prompt
                    self._lag = lag
                    if self.shedding is not None:
                        self.shedding.lag(self, lag)
                    if self.cheap_lag_s is not None and lag > self.cheap_lag_s:
                        self._cheap_until = now + CHEAP_HOLD_S
                    if (self.max_lag_s is not None and lag > self.max_lag_s and not self._skip
                            and (self.shedding is None or self.shedding.may_skip(self, lag))):
                        self.stats.behind += 1
                        self.skip_to_keyframe()
                    self.stats.frames += 1
                    self.stats.last_frame_at = time.time()
                    if self.ring is not None:
                        self.ring.frame(time_s, frame)
                    resumed = skipped_from is not None
                    skipped_s = offset + (skipped_from - first) if resumed and not math.isnan(skipped_from) else None
                    if carried is not None and not resumed:  # (a looping file that ended within a skip)
                        resumed, skipped_s = True, None if math.isnan(carried) else carried
                    carried = None
                    yield LiveFrame(time_s, frame, self.stats.last_frame_at - lag, resumed=resumed,
                                    skipped_from=skipped_s, after_gap=gap)
                    gap = False
                reason = "the stream ended"
            except av.ExitError:  # PyAV's timeout ("Immediate exit requested"): say which one
                opened = self.stats.connects > connects
                reason = (f"no data for {self.stale_s:g} s" if opened
                          else f"no answer within {self.open_timeout_s:g} s")
            except (av.FFmpegError, OSError) as e:
                reason = _reason(e)
            if self.is_device:  # "No such file or directory" alone would not say it is the camera
                reason = f"capture device {self.url}: {reason}"
            if stop.is_set():
                break
            pending, self._pending_skip = self._pending_skip, None
            if pending is not None and first is not None:  # the next frame is after a skip: it says so
                carried = offset + (pending - first) if math.isfinite(pending) else math.nan
            self._skip = False  # a skip cut short by the end of the connection: the gap ends it
            if self.is_file and self.loop and first is not None and reason == "the stream ended":
                continue  # play the file again, as a looping camera
            self.stats.gaps += 1
            gap = gap or first is not None
            self.stats.last_error = reason
            failures += 1
            if first is None and len(self._transports) > 1:  # no frame this way: the other transport next
                self._transports.append(self._transports.pop(0))
                self.stats.last_error = f"{reason} (RTSP over {self._transports[-1].upper()})"
                if failures % len(self._transports):  # the other one not tried since frames last came: now
                    self.stats.reconnects += 1
                    continue
            self.stats.state = "waiting"
            if stop.wait(min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1)) * random.uniform(0.5, 1.5)):
                break
            self.stats.reconnects += 1
        self.stats.state = "stopped"

    def _connection(self, stop: threading.Event) -> Iterator[tuple[float, av.VideoFrame, float | None]]:
        """One connection's frames as (seconds, frame, skipped_from): after frames skipped undecoded,
        the time of the first of them (NaN if unknown), else None. Raises on failure, returns when
        the source ends."""
        options = dict(self.options)
        if self._transports:
            options.setdefault("rtsp_transport", self._transports[0])
            # FFmpeg's own socket timeout too (microseconds), beside PyAV's per-read one below: a reader
            # was seen waiting in av_read_frame for minutes with that one not firing. It bounds the
            # connect and every reply as well, so it is never shorter than the open timeout.
            options.setdefault("timeout", str(int(max(self.open_timeout_s, self.stale_s) * 1e6)))
        if not self.is_file:
            options.setdefault("analyzeduration", "500000")  # open in half a second, not FFmpeg's default 5
        # The read timeout is the stale detector: FFmpeg gives up on a read that got nothing for that long.
        container = av.open(self.url, format=self.format, options=options,
                            timeout=(self.open_timeout_s, self.stale_s))
        self.stats.connects += 1
        try:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # frame threads would hold frames back: latency
            paced = self.is_file
            # A format without timestamps (MJPEG over HTTP: multipart parts carry none) gets frame
            # times FFmpeg makes up at 25 fps, whatever the camera's rate; a live one is timed by
            # when its frames arrive instead.
            arrival = not paced and bool(container.format.flags & av.format.Flags.no_timestamps.value)
            step = frame_step(container, stream) if paced else None  # a raw H.264 file: frames numbered
            plannable = not arrival and not step  # GOPs may be left undecoded by their packets' times
            wall0 = time.monotonic()
            t0 = None

            def pace(packet_s: float, before_waiting=None) -> bool:
                """A file plays at its own speed, its packets read when a camera would send them
                (those left undecoded too): whether to go on. `before_waiting()`, if it waits."""
                nonlocal t0
                t0 = packet_s if t0 is None else t0
                ahead = (packet_s - t0) - (time.monotonic() - wall0)
                if ahead > 0 and before_waiting is not None:
                    before_waiting()
                return not (ahead > 0 and stop.wait(ahead))

            if self.ring is not None:
                self.ring.connected(stream)
            for frame, skipped_from in self._decoded(container, stream, pace if paced else None, step, plannable):
                if stop.is_set():
                    return
                t = time.monotonic() - wall0 if arrival else frame.time
                if t is None:
                    continue
                if skipped_from is not None and arrival:
                    skipped_from = math.nan  # frames timed by arrival: where the skip began is not known
                yield t, frame, skipped_from
        finally:
            if self.ring is not None:
                self.ring.disconnected()
            container.close()

    def _decoded(self, container, stream, pace=None, step=None, plannable=False
                 ) -> Iterator[tuple[av.VideoFrame, float | None]]:
        """The stream's frames, each with None, or after frames skipped undecoded the time of the
        first of them (NaN if unknown); with a ring, each encoded packet goes to it first (no decoding).
        `pace(seconds)`, if given, is called with each packet's decoding time first; False: stop.
        `step` (decode.frame_step): the stream has no timestamps; its packets and frames are numbered.
        `plannable`: packets' times are frames' times, so GOPs no window wants may be left undecoded."""
        time_base = float(stream.time_base) if stream.time_base is not None else None
        skipping, skipped = False, 0
        packets = frames = 0  # with `step`: packets read, and frames decoded or skipped undecoded
        shed = False  # leaving this GOP undecoded (`gop_runs`)
        gop, since_key = None, None  # packets in the last whole GOP, and since the last keyframe
        key_s, gops_s = None, deque(maxlen=4)  # the last keyframe's time; the last GOPs' lengths, seconds
        unwanted = None  # leaving this GOP undecoded, it ending before the next window starts (`wanted_from`): its time
        decoder = stream.codec_context  # or, while the reader is behind, a cheaper one (`cheap_lag_s`)
        used = False  # whether `decoder` has decoded a packet yet (else it holds no frames)
        turn = Turn(self.decode_slots)  # this reader's use of the process's decode slots
        try:
            for packet in container.demux(stream):
                if step and packet.size:
                    packet.dts, packets = packets * step, packets + 1  # (its pts stays unknown: B-frames)
                packet_s = packet.pts * time_base if packet.pts is not None and time_base is not None else None
                if pace is not None and time_base is not None and (packet.dts is not None or packet.pts is not None):
                    if not pace((packet.dts if packet.dts is not None else packet.pts) * time_base, turn.release):
                        return
                if self.ring is not None and packet_s is not None:
                    self.ring.packet(packet, packet_s)
                if packet.is_keyframe:
                    gop, since_key, shed = since_key if since_key is not None else gop, 0, False
                    # a GOP too long to skip whole (or none seen yet: no keyframes?) is never shed; a skip
                    # for being behind that ends here counts as decoding on (else, with readers that are
                    # behind at every keyframe, no run would ever start)
                    if self.gop_runs is not None and gop is not None and gop <= MAX_SKIPPED_PACKETS:
                        shed = self.gop_runs.shed(gop)
                        self.stats.shed += shed
                        skipped = 0 if shed else skipped  # a run of GOPs shed: each whole (the cap is per GOP)
                if packet.is_keyframe and plannable and packet_s is not None:
                    if key_s is not None and packet_s > key_s:
                        gops_s.append(packet_s - key_s)
                    key_s = packet_s
                    wanted = None if shed else self._unwanted(packet_s, gops_s)
                    if wanted is not None:  # (a skip for being behind ends here too: this GOP is left as planned)
                        self._skip, skipped = False, 0
                    elif unwanted is not None and packet_s > unwanted + OVERSHOOT_S:
                        # a GOP left undecoded ran past where the next window starts (a camera stretched
                        # it): that window misses its first frames, and is dropped as skipped
                        skipping = True
                        self._pending_skip = unwanted if self._pending_skip is None else min(self._pending_skip, unwanted)
                    unwanted = wanted
                if since_key is not None:
                    since_key += 1
                if unwanted is not None:
                    turn.release()
                    self.stats.unwanted += bool(packet.size)
                    continue
                if (shed or (self._skip and not packet.is_keyframe)) and skipped < MAX_SKIPPED_PACKETS:
                    turn.release()  # (no decoding to do: the next reader's turn)
                    skipping = True
                    skipped += 1
                    if packet.size:
                        self.stats.skipped += 1
                        if step:
                            packet_s, frames = frames * step * time_base, frames + 1
                        began = packet_s if packet_s is not None else -math.inf
                        self._pending_skip = began if self._pending_skip is None else min(self._pending_skip, began)
                    continue
                self._skip, skipped, shed = False, 0, False
                decoded = []
                if packet.is_keyframe and self.cheap_lag_s is not None:
                    cheap = time.monotonic() < self._cheap_until
                    if cheap != (decoder is not stream.codec_context):
                        if used:
                            decoded = list(decoder.decode(None))  # the frames the old decoder still holds
                            for frame in decoded:  # (drained frames come without a time base)
                                frame.time_base = stream.time_base
                            if decoder is stream.codec_context:
                                decoder.flush_buffers()  # (drained: ready for when the reader catches up)
                        decoder, used = (_cheap_decoder(stream) if cheap else stream.codec_context), False
                    self.stats.cheap += cheap
                decoded += turn.decode(decoder, packet, behind=self._lag > BEHIND_S)
                used = True
                for frame in decoded:
                    if step:  # in presentation order, as the decoder gives them
                        frame.pts, frames = frames * step, frames + 1
                    began = self._pending_skip if self._pending_skip is not None else -math.inf
                    # with B-frames the decoder gives the frames it held back from before a skip after it
                    held = math.isfinite(began) and frame.time is not None and frame.time < began
                    if skipping and not held:
                        yield frame, (began if math.isfinite(began) else math.nan)
                        skipping, self._pending_skip = False, None
                    else:
                        yield frame, None
        finally:
            turn.release()

    def _unwanted(self, key_s: float, gops_s) -> float | None:
        """When the GOP starting at `key_s` (a packet time) surely ends before the next wanted frame
        (the next keyframe due within the longest of the last GOPs, with a quarter of one to spare):
        that frame's time (a packet time); else None."""
        wanted, shift = self._wanted_s, self._shift
        if wanted is None or shift is None or not gops_s or (self.ring is not None and self.ring.keeps_frames):
            return None  # (a recording of decoded frames wants them all: its clips' seconds before an event)
        return wanted + shift if key_s + GOP_ROOM * max(gops_s) <= wanted + shift else None


def _cheap_decoder(stream) -> av.CodecContext:
    """A decoder for `stream` that skips the deblocking filter (H.264, HEVC; others ignore the option)."""
    decoder = av.CodecContext.create(stream.codec_context.name, "r")
    if stream.codec_context.extradata:
        decoder.extradata = stream.codec_context.extradata
    decoder.options = {"skip_loop_filter": "all"}
    decoder.thread_type = "SLICE"
    return decoder


def window_phase(name: str, stride_s: float) -> float:
    """Where a stream's windows start, in [0, stride_s): the same for a name on every worker and
    after every restart (window i keeps meaning the same stretch of stream time), and spread over
    the stride across names."""
    return round(zlib.crc32(name.encode()) / 2**32 * stride_s, 3)


def live_windows(frames: Iterator[LiveFrame], clip_s: float, num_frames: int, stride_s: float | None = None,
                 offset_s: float = 0.0, on_skipped: Callable[[int], None] | None = None,
                 on_next: Callable[[float], None] | None = None) -> Iterator[LiveClip]:
    """Windows of `clip_s` seconds every `stride_s` (default: `clip_s`), `num_frames` sampled from each;
    window i covers [offset_s + i * stride_s, offset_s + i * stride_s + clip_s) in stream time.

    A window closes as soon as its last frame is in: when the next frame, at the stream's recent
    frame interval, would fall at or after its end (or, failing that, when such a frame arrives).
    Windows a gap in the stream left empty are skipped; indices are not reused, so an index always
    names the same stretch of stream time. A window the gap cut into closes with the stream's first
    frame after it (an `after_gap` frame), with the frames it has, and is marked `cut`. After frames skipped undecoded (a `resumed` frame), the
    windows the skip cut into are dropped too (their frames are incomplete), and counted in the
    next clip's `skipped_before` — or, given `on_skipped`, passed to it when the skip ends (a reader
    that skips again and again may close no clip for a long while); those that ended before the
    skip began (`skipped_from`) are whole. `on_next(start_s)`, if given, is told where the next
    window starts whenever that changes (`LiveSource.wanted_from`: the frames before it are not wanted).
    """
    stride = stride_s or clip_s
    buffered: deque[LiveFrame] = deque()  # frames the open windows may sample, in YUV
    intervals: deque[float] = deque(maxlen=9)
    index = 0
    skipped = 0  # windows dropped by skips since the last clip
    told = on_next or (lambda start_s: None)
    told(offset_s)

    def close(cut: bool = False) -> LiveClip | None:
        nonlocal index, skipped
        start = offset_s + index * stride
        end = start + clip_s
        inside = [f for f in buffered if start <= f.time_s < end]
        index += 1
        told(offset_s + index * stride)
        while buffered and buffered[0].time_s < offset_s + index * stride:
            buffered.popleft()
        if not inside:
            return None
        counted, skipped = skipped, 0
        picks = [inside[k] for k in subsample_indices(len(inside), num_frames)]
        # a camera can change resolution mid-stream (a new SPS): a window's frames take its last one's
        width, height = picks[-1].frame.width, picks[-1].frame.height
        rgb = {id(f): f.frame.reformat(width=width, height=height, format="rgb24").to_ndarray() for f in picks}
        return LiveClip(index - 1, round(start, 6), round(end, 6), np.stack([rgb[id(f)] for f in picks]),
                        len(inside), inside[-1].arrived_at, counted, cut)

    for live in frames:
        if live.resumed:  # on to the first window that starts at or after this frame
            # windows that ended before the first frame skipped are whole: close them first
            while (buffered and live.skipped_from is not None
                   and offset_s + index * stride + clip_s <= live.skipped_from + 1e-6):
                if clip := close():
                    yield clip
            first = max(index, math.ceil((live.time_s - offset_s) / stride - 1e-9))
            if on_skipped is not None and first > index:  # the windows with frames skipped
                on_skipped(first - index)
            elif on_skipped is None:
                skipped += first - index
            buffered.clear()
            intervals.clear()
            index = first
            told(offset_s + index * stride)
        while live.time_s >= offset_s + index * stride + clip_s:  # frames past the window's end: it is complete
            if not buffered:  # after a gap: on to the first window that can hold this frame
                index = max(index, math.floor((live.time_s - offset_s - clip_s) / stride) + 1)
                told(offset_s + index * stride)
                break
            if clip := close(cut=live.after_gap):  # closed by the stream's return: cut short by the gap
                yield clip
        if buffered and 0 < live.time_s - buffered[-1].time_s:
            intervals.append(live.time_s - buffered[-1].time_s)
        buffered.append(live)
        if len(intervals) >= 3:  # 0.9: close early only when the next frame is surely past the end
            next_frame = live.time_s + 0.9 * sorted(intervals)[len(intervals) // 2]
            while next_frame >= offset_s + index * stride + clip_s and buffered:
                if clip := close():
                    yield clip


def _reason(error: BaseException) -> str:
    """FFmpeg's reason without its error number and the URL again (streams list shows the URL)."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return one_line(error.strerror, limit=200)
    return one_line(error, limit=200)
