"""Synthetic videos made with PyAV: known frame times, any codec and container.

For tests, benchmarks and the demo when no real video is at hand. Each frame shows a pattern that
moves with the frame number, so frames differ and any wrong pick changes the model input.

    $ python -m pipelines.synthetic out.mp4 --seconds 10 --size 640x360
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np


def frame_image(i: int, width: int, height: int, texture: np.ndarray | None = None) -> np.ndarray:
    """Frame i: colour ramps and a checkerboard that change with i; or, given a texture, a camera-like
    pan over it (temporally coherent, so it compresses and decodes like real footage)."""
    y, x = _grid(height, width)
    if texture is not None:
        shift = (2 * i) % (texture.shape[1] - width)
        grain = np.random.default_rng(i).integers(-4, 5, (height, width, 1), dtype=np.int16)
        return (texture[:height, shift:shift + width] + grain).clip(0, 255).astype(np.uint8)
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1) + 7 * i) % 256
    img[..., 1] = (y * 255 // max(height - 1, 1) + 3 * i) % 256
    img[..., 2] = ((x // 16 + y // 16 + i) % 2) * 200 + 20
    return img


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:height, 0:width]


def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth random blobs over colour ramps: detail at several scales, like a natural scene."""
    rng = np.random.default_rng(seed)
    wide = width + 1024
    y, x = np.mgrid[0:height, 0:wide]
    img = np.zeros((height, wide, 3), np.float32)
    for scale in (64, 16, 4):
        coarse = rng.random((height // scale + 2, wide // scale + 2, 3), dtype=np.float32)
        img += np.repeat(np.repeat(coarse, scale, 0), scale, 1)[:height, :wide] * (255 / 3)
    img[..., 0] = 0.5 * img[..., 0] + 0.5 * (x * 255 / wide)
    return np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))


def make_video(
    path: Path,
    *,
    seconds: float | None = 3.0,
    fps: int | Fraction = 30,
    size: tuple[int, int] = (320, 240),
    codec: str = "libx264",
    time_base: Fraction | None = None,
    pts: list[int] | None = None,
    bframes: bool = True,
    audio: bool = False,
    noise: bool = False,
    seed: int = 0,
    preset: str = "ultrafast",
    gop: int | None = None,
) -> list[int]:
    """Write a video and return the pts of its frames (in `time_base`, default 1/fps).

    Give `pts` for variable frame rate or a start offset; otherwise frames are 1/fps apart.
    `gop`: frames from one keyframe to the next (libx264; default: the encoder's, 250).
    """
    width, height = size
    tb = time_base or 1 / Fraction(fps)
    if pts is None:
        step = 1 / Fraction(fps) / tb
        pts = [int(i * step) for i in range(int(round(seconds * fps)))]
    texture = _texture(width, height, seed) if noise else None
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = tb
        stream.codec_context.time_base = tb
        if codec == "libx264":
            stream.options = {"preset": preset, "bf": "2" if bframes else "0", "crf": "20",
                              **({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"} if gop else {})}
        elif codec in ("libvpx-vp9", "libaom-av1", "libsvtav1"):
            stream.options = {"cpu-used": "8", "deadline": "realtime"} if codec == "libvpx-vp9" else {"preset": "12"} if codec == "libsvtav1" else {"cpu-used": "8"}
        if audio:
            a = container.add_stream("aac", rate=16000)
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height, texture), format="rgb24")
            frame.pts = p
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio:
            samples = np.zeros((1, 16000 * max(1, int(len(pts) / fps))), np.float32)
            aframe = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            aframe.sample_rate = 16000
            for packet in a.encode(aframe):
                container.mux(packet)
            for packet in a.encode():
                container.mux(packet)
    return pts


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="write a synthetic H.264 test video")
    parser.add_argument("path", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.path.parent.mkdir(parents=True, exist_ok=True)
    make_video(args.path, seconds=args.seconds, fps=args.fps, size=(width, height))
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
