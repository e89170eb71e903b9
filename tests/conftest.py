from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.synthetic import make_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"

# Keep the suite's own threads from fighting over the 2 cores of the development machines.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"real videos not found at {SHARED_VIDEOS} (shared/ is beside the checkout in CI)")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def clip_10s(video_dir) -> Path:
    """A generated 10 s 320x240 H.264 video with B-frames, 30 fps."""
    path = video_dir / "ten_seconds.mp4"
    make_video(path, seconds=10.0, fps=30)
    return path
