"""Hostile inputs, made on the spot: each is a (name, source) a job or `reelflow classify` may be given.

Files are written under `dir`; the real video they start from is a small generated one, so the
set works on a bare clone too.

    >>> cases = hostile_sources(tmp_path, good_video)          # doctest: +SKIP
    >>> dict(cases)["hls_to_passwd"]                           # a playlist pointing at /etc/passwd
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.synthetic import make_video


def hostile_sources(dir: Path, good_video: Path) -> list[tuple[str, str]]:
    dir.mkdir(parents=True, exist_ok=True)
    data = good_video.read_bytes()
    (dir / "empty.mp4").write_bytes(b"")
    (dir / "text.mp4").write_text("this is not a video\n" * 50)
    (dir / "truncated.mp4").write_bytes(data[: len(data) // 3])
    audio_only(dir / "audio_only.m4a")
    make_video(dir / "eight_k.mp4", seconds=0.2, fps=5, size=(7680, 4320))
    (dir / "to_passwd.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n/etc/passwd\n#EXT-X-ENDLIST\n")
    (dir / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{good_video}'\nfile '/etc/passwd'\n")
    inside = dir / "inside"
    inside.mkdir(exist_ok=True)
    return [
        ("empty", str(dir / "empty.mp4")),
        ("text", str(dir / "text.mp4")),
        ("truncated_mp4", str(dir / "truncated.mp4")),
        ("audio_only", str(dir / "audio_only.m4a")),
        ("eight_k", str(dir / "eight_k.mp4")),
        ("hls_to_passwd", str(dir / "to_passwd.m3u8")),
        ("ffconcat", str(dir / "list.ffconcat")),
        ("concat_url", f"concat:{good_video}|/etc/passwd"),
        ("dotdot_escape", str(inside) + "/../../../../../../../../etc/passwd"),
        ("etc_passwd", "/etc/passwd"),
        ("cloud_metadata", "http://169.254.169.254/latest/meta-data/"),
        ("file_url", "file:///etc/passwd"),
        ("gopher_url", "gopher://127.0.0.1:70/1"),
        ("subfile_url", f"subfile,,start,0,end,100,,:{good_video}"),
    ]


def audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 3000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.time_base = Fraction(1, 16000)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def mutated_copies(good_video: Path, dir: Path, count: int, seed: int = 7) -> list[Path]:
    """`count` copies of a real video, each damaged differently: flipped bytes, zeroed runs,
    shuffled chunks, cut short — the decoder's input fuzz."""
    rng = random.Random(seed)
    data = good_video.read_bytes()
    dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:  # flip random bytes
            for _ in range(rng.randint(1, 200)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # zero a run
            start = rng.randrange(len(buf))
            buf[start:start + rng.randint(16, 4096)] = bytes(min(len(buf) - start, 4096))
        elif kind == 2:  # swap two chunks
            a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
            n = rng.randint(64, 8192)
            buf[a:a + n], buf[b:b + n] = buf[b:b + n], buf[a:a + n]
        else:  # cut short, then damage the header
            buf = buf[: rng.randrange(64, len(buf))]
            for _ in range(20):
                buf[rng.randrange(min(len(buf), 512))] = rng.randrange(256)
        path = dir / f"mutated_{i:02d}.mp4"
        path.write_bytes(bytes(buf))
        paths.append(path)
    return paths
