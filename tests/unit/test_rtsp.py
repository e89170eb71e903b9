"""Live sources against a real RTSP server: TCP and UDP transport, an outage and the reconnect."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.live import LiveSource, live_windows
from pipelines.synthetic import make_video
from support.rtsp_camera import Camera


@pytest.fixture(scope="module")
def camera_video(video_dir):
    path = video_dir / "rtsp_camera.mp4"
    make_video(path, seconds=4.0, fps=25, size=(320, 240))
    return path


@pytest.fixture
def camera(camera_video):
    cam = Camera(camera_video).start()
    yield cam
    cam.stop()


def windows_until(source, condition, timeout_s: float) -> list:
    """Windows from the source until `condition(windows)` holds or the time is up."""
    stop = threading.Event()
    clips: list = []

    def read():
        for clip in live_windows(source.frames(stop), 0.8, 4):
            clips.append(clip)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not condition(clips) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive(), "the live source did not stop"
    return clips


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_windows_arrive_in_real_time(camera, transport):
    source = LiveSource(camera.url, transport=transport)
    started = time.time()
    clips = windows_until(source, lambda c: len(c) >= 6, timeout_s=30)
    assert len(clips) >= 6 and [c.index for c in clips] == list(range(clips[0].index, clips[0].index + len(clips)))
    assert all(c.frames.shape == (4, 240, 320, 3) for c in clips)
    assert all(18 <= c.frame_count <= 22 for c in clips[1:])  # 0.8 s at 25 fps, across the file's loop too
    assert clips[-1].captured_at - started < 0.8 * len(clips) + 5  # real time, after a short connect
    assert source.stats.reconnects == 0


def test_a_camera_outage_is_a_counted_reconnect_and_windows_resume(camera):
    source = LiveSource(camera.url, backoff_s=0.2, max_backoff_s=1.0, stale_s=2.0)
    stop = threading.Event()
    clips: list = []
    thread = threading.Thread(target=lambda: clips.extend(live_windows(source.frames(stop), 0.8, 4)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(clips) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(clips) >= 3
    camera.stop()
    down_at = time.time()
    time.sleep(3)
    camera.start()  # same port, same URL
    deadline = time.monotonic() + 20
    while not [c for c in clips if c.captured_at > down_at + 3] and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=15)
    after = [c for c in clips if c.captured_at > down_at + 3]
    assert after, f"no windows after the camera came back: {source.stats.as_dict()}"
    assert source.stats.reconnects >= 1 and source.stats.gaps >= 1
    indices = [c.index for c in clips]
    assert indices == sorted(set(indices))  # never reused; the gap's windows are skipped
    assert after[0].start_s > clips[2].end_s + 2  # stream time went on through the outage


@pytest.mark.parametrize("speaks", ["udp", "tcp"])
def test_auto_transport_finds_the_one_a_camera_speaks_and_says_which(camera_video, speaks):
    """A camera (or an RTSP server) that refuses one lower transport: `auto`, the default, tries
    TCP, then UDP, gets windows, and reports the transport it uses."""
    cam = Camera(camera_video, protocols=speaks).start()
    try:
        source = LiveSource(cam.url)
        at_first: list[dict] = []  # the stats when the first window came (UDP on a busy machine may stall later)

        def three_windows(clips: list) -> bool:
            if clips and not at_first:
                at_first.append(source.stats.as_dict())
            return len(clips) >= 3

        clips = windows_until(source, three_windows, timeout_s=40)
        assert len(clips) >= 3, source.stats.as_dict()
        assert source.stats.transport == speaks and source.stats.as_dict()["transport"] == speaks
        if speaks == "udp":  # TCP was refused, counted, then UDP (which, on a busy machine, may need a retry too)
            assert at_first[0]["gaps"] >= 1, at_first
            assert at_first[0]["gaps"] > 1 or "TCP" in at_first[0]["last_error"], at_first
    finally:
        cam.stop()


def test_a_fixed_transport_the_camera_refuses_is_a_counted_error_not_a_stall(camera_video):
    cam = Camera(camera_video, protocols="udp").start()
    try:
        source = LiveSource(cam.url, transport="tcp", backoff_s=0.2, max_backoff_s=0.5)
        clips = windows_until(source, lambda c: source.stats.gaps >= 2, timeout_s=30)
        assert clips == [] and source.stats.gaps >= 2 and source.stats.last_error
    finally:
        cam.stop()
