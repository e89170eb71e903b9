"""Evidence clips of a live stream, without re-encoding: a ring of its *encoded* packets, and a
clip writer that remuxes them (and the ones that follow) into an MP4 or MKV file.

    >>> ring = PacketRing(keep_s=5.0)                                  # doctest: +SKIP
    >>> source = LiveSource("rtsp://cam/stream", ring=ring)           # the source feeds the ring
    >>> clip = ClipWriter(ring, Path("door-1.mp4"), start_s=t - 5, end_s=t + 5).start()
    >>> clip.wait(); clip.state, clip.duration_s
    ('ready', 10.4)

The ring holds the packets of the current connection from the last keyframe before `newest -
keep_s` on, within a byte bound; it costs no decoding. A clip starts on the last keyframe at or
before `start_s` (or the oldest one held), its timestamps shifted to start at zero, and ends with
the last packet before `end_s`: remuxed, its frames decode to exactly the camera's frames.
Times are the live source's stream time (`LiveFrame.time_s`).

Sources whose packets cannot be remuxed (no timestamps, as MJPEG over HTTP; a codec neither MP4
nor Matroska takes) fall back to keeping decoded frames and encoding them (mode `encode`), said in
`streams list`. The writer runs on a thread of its own behind a bounded queue: a slow or full disk
fails the clip (`state` "failed", `reason`), never the stream that feeds it.
"""

from __future__ import annotations

import io
import queue
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.errors import one_line

MP4_CODECS = {"h264", "hevc", "av1", "mpeg4", "vp9", "mjpeg"}  # remuxed into MP4 (plays in browsers)
MKV_CODECS = {"vp8", "mpeg2video", "theora", "h263", "ffv1"}  # remuxed into Matroska
RING_MAX_BYTES = 64 * 2**20  # a stream's ring never holds more (a huge GOP at a high bit rate)
RING_MAX_FRAMES = 1500  # the `encode` fallback's bound on decoded frames kept (60 s at 25 fps)
WRITER_QUEUE = 1000  # packets waiting for a slow disk before the clip fails


@dataclass(frozen=True)
class Held:
    """An encoded packet (or, in `encode` mode, a decoded frame) and its stream time."""

    time_s: float
    data: bytes | np.ndarray  # an encoded packet, or (`encode` mode) a decoded frame as YUV 4:2:0
    pts: int | None = None
    dts: int | None = None
    keyframe: bool = True

    @property
    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.nbytes


class PacketRing:
    """The recent packets of one live stream (one connection at a time), and the clips they feed."""

    def __init__(self, keep_s: float = 5.0, max_bytes: int = RING_MAX_BYTES):
        self.keep_s, self.max_bytes = keep_s, max_bytes
        self.lock = threading.Lock()
        self.held: deque[Held] = deque()
        self.bytes = 0
        self.mode: str | None = None  # "remux", or "encode" (decoded frames kept), once a connection opened
        self.note = ""  # why `encode`
        self.codec: str | None = None
        self.time_base: Fraction | None = None
        self.rate: Fraction | None = None
        self.epoch = 0  # connections so far: a clip ends where its connection ended
        self.shift: float | None = None  # stream time = the packet's own time + shift (None: not known yet)
        self._template = None  # the connection's input stream (its codec parameters), while open
        self._writers: list[ClipWriter] = []
        self._early: list[Held] = []  # packets before the connection's first frame, in their own time

    # -- fed by the live source --

    def connected(self, stream) -> None:
        """A new connection (`stream`: its video stream): the packets held so far end with the old one."""
        with self.lock:
            self._cut("the stream reconnected")
            self.held.clear()
            self._early.clear()
            self.bytes, self.shift, self.epoch = 0, None, self.epoch + 1
            codec = stream.codec_context.name
            self.codec, self.time_base = codec, stream.time_base
            self.rate = stream.average_rate or stream.guessed_rate
            if codec not in MP4_CODECS | MKV_CODECS:
                self.mode, self.note = "encode", f"{codec} is not remuxed into MP4 or Matroska: frames are encoded"
            elif stream.container.format.flags & av.format.Flags.no_timestamps.value:
                self.mode, self.note = "encode", f"{stream.container.format.name} packets carry no timestamps: " \
                                                 "frames are encoded"
            else:
                self.mode, self.note = "remux", ""
            self._template = stream

    def disconnected(self) -> None:
        """The connection is closing: its codec parameters are not usable any more."""
        with self.lock:
            self._template = None
            self._cut("the stream reconnected")

    def keep(self, seconds: float) -> None:
        """Keep `seconds` of packets; 0: keep none (a stream that records nothing pays nothing)."""
        with self.lock:
            self.keep_s = seconds
            if seconds <= 0:
                self.held.clear()
                self._early.clear()
                self.bytes = 0

    def packet(self, packet: av.Packet, own_time_s: float) -> None:
        """An encoded packet of the connection, at its own time (`frame.time` of what it decodes to)."""
        if self.keep_s <= 0 or self.mode != "remux" or packet.pts is None or packet.size == 0:
            return
        with self.lock:
            if self.shift is None:  # before the connection's first frame: its stream time comes with it
                self._early.append(Held(own_time_s, bytes(packet), packet.pts, packet.dts, packet.is_keyframe))
                del self._early[:-RING_MAX_FRAMES]
                return
            self._hold(Held(own_time_s + self.shift, bytes(packet), packet.pts, packet.dts, packet.is_keyframe))

    @property
    def keeps_frames(self) -> bool:
        """Whether it keeps decoded frames (`encode` mode, recording): then every frame is to be decoded."""
        return self.keep_s > 0 and self.mode == "encode"

    def frame(self, time_s: float, frame: av.VideoFrame) -> None:
        """A decoded frame at stream time `time_s` (kept in `encode` mode only)."""
        if self.keep_s > 0 and self.mode == "encode":
            # as a YUV array, converted here: FFmpeg's scaler is not to be run on two threads at once
            image = frame.reformat(width=frame.width // 2 * 2, height=frame.height // 2 * 2, format="yuv420p")
            with self.lock:
                self._hold(Held(time_s, image.to_ndarray()))

    def timed(self, shift: float) -> None:
        """The connection's first frame came: stream time = own time + `shift`."""
        with self.lock:
            self.shift = shift
            for early in self._early:
                self._hold(Held(early.time_s + shift, early.data, early.pts, early.dts, early.keyframe))
            self._early.clear()

    # -- read by the clip writers --

    def begin(self, writer: ClipWriter) -> None:
        """Start `writer` at the last keyframe at or before its `start_s` (or the oldest keyframe held):
        the held packets from there go to its queue, and every new one after them."""
        with self.lock:
            held = list(self.held)
            keys = [i for i, h in enumerate(held) if h.keyframe]
            at = max([i for i in keys if held[i].time_s <= writer.start_s + 1e-6], default=keys[0] if keys else len(held))
            writer.epoch, writer.mode = self.epoch, self.mode
            if self.mode == "remux" and self._template is not None:  # its codec parameters, kept past a reconnect
                writer.keep_codec(self._template)
            writer.queue = queue.Queue(WRITER_QUEUE + len(held) - at)
            for h in held[at:]:
                writer.queue.put_nowait(h)
            self._writers.append(writer)

    def detach(self, writer: ClipWriter) -> None:
        with self.lock:
            if writer in self._writers:
                self._writers.remove(writer)

    def _hold(self, held: Held) -> None:
        self.held.append(held)
        self.bytes += held.size
        for writer in self._writers:
            writer.offer(held)
        # keep from the last keyframe at or before newest - keep_s; and never more than the bounds
        horizon = held.time_s - self.keep_s
        while len(self.held) > 1:
            later_key = next((i for i, h in enumerate(self.held) if i > 0 and h.keyframe), None)
            too_big = self.bytes > self.max_bytes or len(self.held) > RING_MAX_FRAMES
            if later_key is None or (self.held[later_key].time_s > horizon and not too_big):
                break
            for _ in range(later_key):  # drop the oldest GOP
                self.bytes -= self.held.popleft().size

    def _cut(self, reason: str) -> None:
        for writer in self._writers:
            writer.cut(reason)


class ClipWriter:
    """One clip: the ring's packets from `start_s`, then the stream's own, until `end_s` (which
    `extend` can move, up to `max_s` after the clip's start). `state`: recording, ready, failed."""

    def __init__(self, ring: PacketRing, path: Path, start_s: float, end_s: float, max_s: float = 120.0):
        self.ring, self.path = ring, Path(path)
        self.start_s, self.end_s, self.max_s = start_s, end_s, max_s
        self.state, self.reason = "recording", ""
        self.first_s: float | None = None  # the stream time of the clip's first frame
        self.last_s: float | None = None  # ... and the end of its last
        self.frames = 0
        self.epoch, self.mode = 0, ring.mode
        self.queue: queue.Queue = queue.Queue(WRITER_QUEUE)
        self.done = threading.Event()
        self._note = ""
        self._holder = self._template = None  # the codec parameters (keep_codec)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"reelflow-clip-{self.path.name}")

    @property
    def duration_s(self) -> float:
        return 0.0 if self.first_s is None or self.last_s is None else round(self.last_s - self.first_s, 3)

    def keep_codec(self, template) -> None:
        """A copy of the input stream's codec parameters, on an output stream in memory (no disk):
        the clip can be written after the connection it came from closed."""
        self._holder = av.open(io.BytesIO(), "w", format="matroska")
        self._template = self._holder.add_stream_from_template(template)

    def start(self) -> ClipWriter:
        self.ring.begin(self)
        self._thread.start()
        return self

    def extend(self, end_s: float) -> None:
        """Another event inside the clip: record on until `end_s` (within the maximum length)."""
        if self.state == "recording":
            self.end_s = max(self.end_s, end_s)

    def offer(self, held: Held) -> None:
        """A new packet from the ring (called by the stream's reader, under the ring's lock: never blocks)."""
        if self.state != "recording":
            return
        try:
            self.queue.put_nowait(held)
        except queue.Full:
            self._fail(f"the disk is too slow: {self.queue.maxsize} packets waited to be written")

    def cut(self, reason: str) -> None:
        """The connection ended: the clip ends with what it has."""
        if self.state == "recording":
            self._note = f"cut short: {reason}"
            self._put_end()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self.done.wait(timeout_s)

    def _put_end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass  # the writer is failing anyway (or sees the state)

    def _fail(self, reason: str) -> None:
        if self.state == "recording":
            self.state, self.reason = "failed", reason

    def _limit_s(self) -> float:
        return min(self.end_s, (self.first_s if self.first_s is not None else self.start_s) + self.max_s)

    def _run(self) -> None:
        out = stream = file = None
        base = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Python opens and writes the file (FFmpeg through it): a disk that blocks then blocks
            # this thread alone, as Python lets go of the GIL around its system calls
            file = open(self.path, "wb")  # noqa: SIM115 (closed below, after the muxer)
            out = av.open(file, "w", format="mp4" if self.path.suffix == ".mp4" else "matroska")
            while self.state == "recording":
                try:
                    held = self.queue.get(timeout=1.0)
                except queue.Empty:
                    continue
                if held is None or held.time_s >= self._limit_s():
                    break
                if stream is None:
                    stream = self._output_stream(out, held)
                    self.first_s = held.time_s
                    base = held.pts  # the keyframe the clip opens with shows at 0 (earlier decode times go negative)
                self.last_s = max(self.last_s or held.time_s, held.time_s)  # decode order: B-frames show earlier
                if self.mode == "remux":
                    packet = av.Packet(held.data)
                    packet.pts, packet.dts = held.pts - base, None if held.dts is None else held.dts - base
                    packet.time_base, packet.is_keyframe, packet.stream = self.ring.time_base, held.keyframe, stream
                    out.mux(packet)
                else:
                    if held.data.shape != (stream.height * 3 // 2, stream.width):
                        self._note = "cut short: the picture size changed"
                        break
                    frame = av.VideoFrame.from_ndarray(held.data, format="yuv420p")
                    frame.pts, frame.time_base = round((held.time_s - self.first_s) * 1000), Fraction(1, 1000)
                    out.mux(stream.encode(frame))
                self.frames += 1
            if self.state == "recording" and not self.frames:
                raise RuntimeError(f"no frames to record ({self._note or 'the stream sent none in time'})")
            if self.mode == "encode" and stream is not None:
                out.mux(stream.encode(None))
            if self.ring.rate and self.last_s is not None:
                self.last_s += float(1 / self.ring.rate)  # the last frame lasts a frame interval
            out.close()
            out = None
            file.close()
            if self.state == "recording":
                self.state, self.reason = "ready", self._note
        except Exception as e:  # a full disk, an unwritable directory, a codec the container refuses
            self.state, self.reason = "failed", self.reason or one_line(e, limit=300)
        finally:
            self.ring.detach(self)
            for closing in (out, file, self._holder):
                try:
                    if closing is not None:
                        closing.close()
                except Exception:
                    pass
            if self.state == "failed":
                try:
                    self.path.unlink(missing_ok=True)  # no half file left to mistake for a clip
                except OSError:
                    pass
            self.done.set()

    def _output_stream(self, out, first: Held):
        if self.mode == "remux":
            if self._template is None:
                raise RuntimeError("the stream's codec parameters were not known when the clip began")
            return out.add_stream_from_template(self._template)
        encoder = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = out.add_stream(encoder, rate=self.ring.rate or Fraction(25),
                                options={"preset": "veryfast"} if encoder == "libx264" else {})
        stream.height, stream.width = first.data.shape[0] * 2 // 3, first.data.shape[1]
        stream.pix_fmt, stream.codec_context.time_base = "yuv420p", Fraction(1, 1000)
        return stream


def clip_suffix(codec: str | None) -> str:
    """The container a codec is remuxed into: MP4 where it can be, else Matroska."""
    return ".mkv" if codec in MKV_CODECS else ".mp4"


def _encoder() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"
