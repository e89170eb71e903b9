"""The benchmark corpus: generated H.264 videos with B-frames, plus the real videos in shared/.

Generated files are cached in benchmarks/corpus/ (not committed); delete it to regenerate.

    $ python benchmarks/corpus.py          # writes the corpus, prints its files
"""

from __future__ import annotations

from pathlib import Path

from pipelines.synthetic import make_video

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "corpus"
SHARED_VIDEOS = HERE.parents[1] / "shared" / "data" / "videos"

# name: (seconds, (width, height)) — several 20 s 360p videos and a 12 s 1080p one, 30 fps.
GENERATED = {
    "gen_360p_a.mp4": (20.0, (640, 360)),
    "gen_360p_b.mp4": (20.0, (640, 360)),
    "gen_360p_c.mp4": (20.0, (640, 360)),
    "gen_1080p.mp4": (12.0, (1920, 1080)),
}


def generated_videos() -> list[Path]:
    CORPUS_DIR.mkdir(exist_ok=True)
    paths = []
    for seed, (name, (seconds, size)) in enumerate(GENERATED.items()):
        path = CORPUS_DIR / name
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            make_video(tmp, seconds=seconds, fps=30, size=size, noise=True, seed=seed, preset="veryfast")
            tmp.rename(path)
        paths.append(path)
    return paths


def real_videos() -> list[Path]:
    return sorted(SHARED_VIDEOS.glob("*.mp4")) + sorted(SHARED_VIDEOS.glob("*.avi")) if SHARED_VIDEOS.is_dir() else []


def short_corpus() -> list[Path]:
    """The first two generated 360p videos and the 1080p one: for the slow models and --quick."""
    generated = generated_videos()
    return generated[:2] + [p for p in generated if "1080p" in p.name]


def warmup_video() -> Path:
    """A 6 s 360p video: a few clips to warm a classifier or a stack up with, cheap even for the slow models."""
    return long_video(6)


def long_video(seconds: int) -> Path:
    """A 360p video of the given length, e.g. for the memory-vs-length measurement (10 min: 1.5-2 min to
    generate on 2 cores with x264's fastest preset, ultrafast; ~100 MB)."""
    CORPUS_DIR.mkdir(exist_ok=True)
    path = CORPUS_DIR / f"gen_360p_{seconds}s.mp4"
    if not path.exists():
        if seconds > 60:
            print(f"corpus: generating {path.name} ({seconds} s) ...", flush=True)
        tmp = path.with_suffix(".part.mp4")
        make_video(tmp, seconds=seconds, fps=30, size=(640, 360), preset="ultrafast")
        tmp.rename(path)
    return path


if __name__ == "__main__":
    for p in generated_videos() + real_videos() + [long_video(60), long_video(600)]:
        print(p)
