from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.inference import default_cache_dir
from pipelines.synthetic import make_video

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"

# Keep the suite's own threads from fighting over the 2 cores of the development machines.
torch.set_num_threads(2)

# Stacks under test each get a home of their own; the models they convert for OpenVINO are kept in
# one place for the whole suite (and later runs), as the pipelines' own default keeps them, so that
# each test's `up` reads a conversion rather than making it again (tests/unit/test_runtimes.py
# checks conversion and the cache themselves, in directories of their own).
os.environ.setdefault("REELFLOW_MODEL_CACHE", str(default_cache_dir()))


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


@pytest.fixture(scope="session")
def peaked_checkpoint(tmp_path_factory):
    """checkpoint(model_name) -> (path, nn.Module): random weights with a scaled-up projection."""
    from support.checkpoint_files import peaked_model, write_checkpoint

    from pipelines.inference import ClipModel

    made = {}

    def make(name: str):
        if name not in made:
            from pipelines.synthetic import frame_image
            from pipelines.transforms import preprocess_clip

            clip_model = ClipModel.load(name, "none", runtime="torch")
            spec = clip_model.spec
            frames = np.stack([frame_image(i, 320, 240) for i in range(spec.num_frames)])
            _, features = clip_model.predict(preprocess_clip(frames, spec)[None])
            model = peaked_model(name, float(features.norm()))
            made[name] = (write_checkpoint(model, tmp_path_factory.mktemp("ckpt") / f"{name}.pyth"), model.eval())
        return made[name]

    return make


@pytest.fixture(scope="session")
def mm_demo_results(shared_videos, tmp_path_factory) -> Path:
    """`reelflow classify --json --embeddings` of the real 10 s video (random weights): what a user
    feeds `reelflow report` and `reelflow annotate`, made once for both."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("classified") / "mm_demo.jsonl"
    reelflow = str(Path(sys.executable).parent / "reelflow")
    result = subprocess.run([reelflow, "classify", str(shared_videos / "mm_demo.mp4"), "--weights", "none", "--json",
                             "--embeddings"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    return out


@pytest.fixture(scope="module")
def redis_server_url(tmp_path_factory) -> str:
    """The URL of a real redis-server (the embedded one) for the module's tests; they flush it as they need."""
    from services.store.embedded import EmbeddedRedis

    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis-home"))
    url = embedded.start()
    yield url
    embedded.stop()
