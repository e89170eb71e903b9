"""A live reader behind its stream decodes cheaply (without the deblocking filter), switching
decoders at keyframes, and back in full once it keeps up: no frame lost at either switch."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from pipelines.live import LiveSource
from pipelines.synthetic import make_video


def _reference(path) -> list[np.ndarray]:
    """Every frame's luma, decoded in full."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("bframes", [False, True])  # B-frames: the old decoder holds frames at a switch
def test_a_reader_behind_decodes_without_deblocking_then_in_full_again(video_dir, bframes):
    path = video_dir / f"live_cheap_b{int(bframes)}.mp4"
    # not x264's ultrafast preset: it turns deblocking off, and there would be nothing to skip
    make_video(path, seconds=4.0, fps=25, size=(192, 144), bframes=bframes, gop=10, noise=True, preset="veryfast")
    reference = _reference(path)
    source = LiveSource(str(path), cheap_lag_s=-1.0)  # every frame counts as behind: cheap from GOP 2 on
    stop, seen = threading.Event(), []
    for live_frame in source.frames(stop):
        seen.append((live_frame.time_s, live_frame.frame.to_ndarray(format="gray")))
        if len(seen) == 35:  # the reader keeps up from here: the next keyframe (frame 40) switches back
            source.cheap_lag_s, source._cheap_until = 1e9, 0.0
        if len(seen) == 80:
            break
    times = [round(t, 2) for t, _ in seen]
    assert times == [round(i * 0.04, 2) for i in range(80)]  # every frame, in order, over both switches
    assert source.stats.cheap == 3  # GOPs 2-4 (the first keyframe came before any lag was known)
    psnr = [_psnr(luma, reference[i]) for i, (_, luma) in enumerate(seen)]
    assert all(p == float("inf") for p in psnr[:10])  # GOP 1 in full
    cheap = psnr[10:40]
    assert all(p != float("inf") for p in cheap[1:]), cheap  # no deblocking (an I-frame can come out the same)
    assert min(cheap) > 25, cheap  # close to what the filter gives, not garbage
    assert all(p == float("inf") for p in psnr[40:]), psnr[40:]  # the stream's own decoder again, exactly


def test_a_reader_that_keeps_up_decodes_in_full(video_dir):
    path = video_dir / "live_cheap_never.mp4"
    make_video(path, seconds=1.6, fps=25, size=(192, 144), bframes=False, gop=10, noise=True, preset="veryfast")
    source = LiveSource(str(path), cheap_lag_s=30.0)  # never that far behind
    stop, seen = threading.Event(), []
    for live_frame in source.frames(stop):
        seen.append(live_frame.frame.to_ndarray(format="gray"))
        if len(seen) == 40:
            break
    assert source.stats.cheap == 0
    reference = _reference(path)
    assert all(np.array_equal(luma, reference[i]) for i, luma in enumerate(seen))
