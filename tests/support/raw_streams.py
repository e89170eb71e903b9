"""Video as raw elementary streams: no container, so no timestamps (what some cameras and
encoders write: .h264, .hevc, .mjpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def raw_copy(source: Path, target: Path, fmt: str) -> Path:
    """`source`'s video stream, packets unchanged, as a raw stream (`fmt`: "h264", "hevc")."""
    with av.open(str(source)) as inp, av.open(str(target), "w", format=fmt) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    return target


def mjpeg_stream(target: Path, frames: int, size: tuple[int, int] = (160, 120)) -> Path:
    """JPEG pictures one after another, as a camera's MJPEG, the left half of each a shade lighter.
    FFmpeg reads them as jpeg_pipe at 25 fps (small pictures, several to its probe, it reads with
    its raw mjpeg demuxer instead)."""
    width, height = size
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = width, height, "yuvj420p", Fraction(1, 25)
    encoder.sample_aspect_ratio = Fraction(1, 1)  # written in a JFIF header, as cameras and ffmpeg do
    noise = np.random.default_rng(0)
    with open(target, "wb") as f:
        for i in range(frames):
            rgb = noise.integers(0, 256, (height, width, 3), dtype=np.uint8)  # detail: pictures of some size
            rgb[:, : width // 2] = i * 255 // max(1, frames - 1)  # the left half: the shade
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            frame.pts = i
            for packet in encoder.encode(frame):
                f.write(bytes(packet))
        for packet in encoder.encode(None):
            f.write(bytes(packet))
    return target
