"""A generated labelled-video dataset whose classes differ by appearance and motion.

    red_blobs      red blobs drifting right over a dark background
    green_stripes  green horizontal stripes scrolling down
    blue_noise     static blue noise (only the grain changes)

Each video has its own seed (positions, speeds, shades), so no two are alike.

    >>> make_dataset(tmp_path / "data", train=8, val=4)                 # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CLASSES = ("red_blobs", "green_stripes", "blue_noise")
SIZE = (160, 120)  # width, height
FPS = 30


def _frames(kind: str, seed: int, seconds: float):
    rng = np.random.default_rng(seed)
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width]
    n = int(round(seconds * FPS))
    if kind == "red_blobs":
        centres = rng.uniform([0, 10], [width, height - 10], (4, 2))
        speed = rng.uniform(2.0, 4.0)
        radius = rng.uniform(8, 14)
        for i in range(n):
            img = np.full((height, width, 3), 30, np.uint8)
            for cx, cy in centres:
                px = (cx + speed * i) % width
                img[(x - px) ** 2 + (y - cy) ** 2 < radius ** 2] = (220, 40, 40)
            yield img
    elif kind == "green_stripes":
        period = int(rng.integers(14, 24))
        speed = rng.uniform(1.5, 3.0)
        for i in range(n):
            on = ((y + speed * i) % period) < period / 2
            img = np.full((height, width, 3), 25, np.uint8)
            img[on] = (40, 200, 60)
            yield img
    else:
        base = rng.integers(0, 120, (height, width, 1))
        for _ in range(n):
            grain = rng.integers(-6, 7, (height, width, 1))
            img = np.zeros((height, width, 3), np.int64)
            img[..., 2:] = 110 + base + grain
            img[..., :2] = (base + grain) // 4
            yield img.clip(0, 255).astype(np.uint8)


def write_video(path: Path, kind: str, seed: int, seconds: float = 2.5) -> Path:
    width, height = SIZE
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "20"}
        for img in _frames(kind, seed, seconds):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_dataset(root: Path, train: int = 8, val: int = 4, test: int = 0, seed: int = 0,
                 classes=CLASSES) -> Path:
    """root/{train,val[,test]}/<class>/<n>.mp4; video seeds never repeat across splits."""
    counter = seed * 10_000
    for split, count in (("train", train), ("val", val), ("test", test)):
        for kind in classes:
            if not count:
                continue
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                counter += 1
                write_video(folder / f"{kind}_{n}.mp4", kind, counter, seconds=2.0 + (counter % 3) * 0.5)
    return root
