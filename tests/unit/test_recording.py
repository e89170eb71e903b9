"""Evidence clips (issue 22) from real live sources: a ring of the camera's encoded packets, remuxed
into a file that plays, starts on a keyframe within one GOP before `event - pre`, lasts `pre +
post` within a GOP, and decodes to exactly the camera's frames; bounded memory; a slow or
unwritable disk fails the clip and never the stream; sources without usable packets encode."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.live import LiveSource
from pipelines.recording import ClipWriter, PacketRing
from pipelines.synthetic import make_video
from support.live_servers import HttpCameras
from support.rtsp_camera import Camera

FPS, GOP_S = 25, 1.0


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory) -> Path:
    """A camera-like video: 25 fps, a keyframe every second, B-frames, textured (real bits per frame)."""
    path = tmp_path_factory.mktemp("recording") / "camera.mp4"
    make_video(path, seconds=14.0, fps=FPS, size=(320, 240), noise=True, gop=int(FPS * GOP_S))
    return path


def probe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,nb_read_frames:format=duration",
                           "-count_frames", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)
    return {"codec": info["streams"][0]["codec_name"], "frames": int(info["streams"][0]["nb_read_frames"]),
            "duration": float(info["format"]["duration"])}


def record(source: LiveSource, ring: PacketRing, path: Path, event_s: float, pre: float, post: float,
           until_s: float, on_frame=None) -> tuple[ClipWriter, dict[float, np.ndarray]]:
    """Read `source` until stream time `until_s`, starting a clip when stream time reaches `event_s`;
    the frames seen (gray) by stream time."""
    stop = threading.Event()
    frames: dict[float, np.ndarray] = {}
    writer = None
    for live in source.frames(stop):
        frames[live.time_s] = live.frame.to_ndarray(format="gray")
        if on_frame is not None:
            on_frame(live)
        if writer is None and live.time_s >= event_s:
            writer = ClipWriter(ring, path, event_s - pre, event_s + post).start()
        if live.time_s >= until_s:
            break
    stop.set()
    assert writer is not None and writer.wait(20)
    return writer, frames


@pytest.mark.parametrize("pre,post", [(2.0, 2.0), pytest.param(3.5, 1.2, marks=pytest.mark.slow)])
def test_a_clip_is_the_cameras_own_packets_from_a_keyframe_before_pre_to_post(tmp_path, gop_video, pre, post):
    cam = Camera(gop_video).start()
    try:
        ring = PacketRing(keep_s=pre + 1.0)
        source = LiveSource(cam.url, ring=ring)
        event = 6.3
        writer, frames = record(source, ring, tmp_path / "clip.mp4", event, pre, post, until_s=event + post + 1.5)
    finally:
        cam.stop()
    assert writer.state == "ready", writer.reason
    assert ring.mode == "remux"
    # starts on a keyframe within one GOP before event - pre, lasts pre + post within a GOP
    assert event - pre - GOP_S - 0.05 <= writer.first_s <= event - pre + 1e-6, writer.first_s
    info = probe(writer.path)
    assert info["codec"] == "h264"
    assert pre + post - 0.1 <= info["duration"] <= pre + post + GOP_S + 0.1, info
    with av.open(str(writer.path)) as clip:
        stream = clip.streams.video[0]
        got = [(frame.time, frame.to_ndarray(format="gray"), frame.key_frame) for frame in clip.decode(stream)]
    assert got[0][0] == pytest.approx(0.0, abs=1e-3) and got[0][2]  # timestamps start at zero, on a keyframe
    assert len(got) == info["frames"] and abs(len(got) - round(info["duration"] * FPS)) <= 1
    times = np.array(sorted(frames))
    for t, image, _ in got:  # frame for frame, the camera's own pictures at those times
        at = times[np.argmin(np.abs(times - (writer.first_s + t)))]
        assert abs(at - (writer.first_s + t)) < 0.5 / FPS
        assert np.array_equal(frames[at], image), f"clip frame at {t:.2f} s differs from the camera's at {at:.2f} s"


@pytest.mark.slow  # 13 s of stream played live (benchmarks/clips_memory.py measures 10 minutes)
def test_the_ring_holds_bounded_memory_and_costs_no_decoding(tmp_path, gop_video):
    ring = PacketRing(keep_s=2.0)
    source = LiveSource(str(gop_video), ring=ring)  # a file played live: 13 s of stream
    sizes: list[tuple[float, int, int]] = []
    stop = threading.Event()
    for live in source.frames(stop):
        sizes.append((live.time_s, ring.bytes, len(ring.held)))
        if live.time_s >= 13:
            break
    stop.set()
    settled = [s for s in sizes if s[0] > 5]
    most = max(n for _, _, n in settled)
    assert most <= (2.0 + 2 * GOP_S) * FPS + 2  # keep_s and at most the GOP it began in, and the next
    early = max(b for t, b, _ in settled if t < 9)
    late = max(b for t, b, _ in settled if t >= 9)
    assert late <= 1.3 * early  # flat over time, not growing
    assert ring.bytes == sum(h.size for h in ring.held)


def test_an_unwritable_directory_fails_the_clip_and_the_stream_goes_on(tmp_path, gop_video):
    locked = tmp_path / "locked"
    locked.mkdir()
    made_immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    target = locked / "clips" if made_immutable else tmp_path / "a-file" / "clips"
    if not made_immutable:  # a filesystem without attributes: a directory under a file cannot be made either
        (tmp_path / "a-file").write_text("not a directory")
    try:
        ring = PacketRing(keep_s=2.0)
        source = LiveSource(str(gop_video), ring=ring)
        after: list[float] = []
        writer, _ = record(source, ring, target / "c.mp4", 3.0, 1.0, 1.0, until_s=6.0,
                           on_frame=lambda live: after.append(live.time_s))
        assert writer.state == "failed" and writer.reason and "\n" not in writer.reason
        assert max(after) >= 6.0  # the stream was read on after the clip failed
        assert not (target / "c.mp4").exists()
    finally:
        if made_immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_a_disk_too_slow_fails_the_clip_not_the_stream(tmp_path, gop_video, monkeypatch):
    from pipelines import recording

    monkeypatch.setattr(recording, "WRITER_QUEUE", 10)
    fifo = tmp_path / "slow.mp4"
    os.mkfifo(fifo)  # opening it for writing waits for a reader that comes only at the end: a stuck disk
    ring = PacketRing(keep_s=2.0)
    source = LiveSource(str(gop_video), ring=ring)
    read_at: list[float] = []
    stop = threading.Event()
    writer = None
    started = time.monotonic()
    for live in source.frames(stop):
        read_at.append(time.monotonic())
        if writer is None and live.time_s >= 3.0:
            writer = ClipWriter(ring, fifo, 2.0, 6.0).start()
        if live.time_s >= 6.0:
            break
    stop.set()
    assert writer.state == "failed" and "too slow" in writer.reason, writer.reason
    # the source kept its real-time pace (6 s of stream in about 6 s), never waiting for the disk
    assert time.monotonic() - started < 8.0 and max(np.diff(read_at)) < 0.5
    with open(fifo, "rb") as unblock:  # let the stuck writer go
        unblock.read()
    assert writer.wait(10)


def test_mjpeg_over_http_has_no_usable_packets_so_frames_are_encoded(tmp_path):
    with HttpCameras(tmp_path) as cams:
        ring = PacketRing(keep_s=2.0)
        source = LiveSource(cams.url("/live.mjpg"), ring=ring)
        writer, _ = record(source, ring, tmp_path / "mjpeg.mp4", 3.0, 2.0, 1.0, until_s=5.0)
    assert ring.mode == "encode" and "timestamps" in ring.note
    assert writer.state == "ready", writer.reason
    info = probe(writer.path)
    assert info["codec"] in ("h264", "mpeg4") and 2.5 <= info["duration"] <= 3.5, info


def test_a_full_disk_fails_the_clip_with_its_reason(tmp_path, gop_video):
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")  # every write: ENOSPC, as from a full disk
    ring = PacketRing(keep_s=2.0)
    writer, _ = record(LiveSource(str(gop_video), ring=ring), ring, full, 3.0, 1.0, 1.0, until_s=5.0)
    assert writer.state == "failed" and "No space left on device" in writer.reason, writer.reason


def test_a_clip_begun_just_before_a_reconnect_is_still_written(tmp_path, gop_video):
    """The clip keeps a copy of the stream's codec parameters when it begins: the connection it
    came from may close before its writer gets to them (a camera that drops, a file that loops)."""
    ring = PacketRing(keep_s=3.0)
    source = LiveSource(str(gop_video), ring=ring)
    stop = threading.Event()
    frames = source.frames(stop)  # held: the connection stays open until disconnected() below
    while next(frames).time_s < 4.0:
        pass
    writer = ClipWriter(ring, tmp_path / "c.mp4", 2.0, 9.0)
    ring.begin(writer)  # what start() does, then the connection closes before its thread runs
    ring.disconnected()
    writer._thread.start()
    assert writer.wait(20)
    stop.set()
    frames.close()
    assert writer.state == "ready" and "reconnected" in writer.reason, (writer.state, writer.reason)
    assert 1.5 <= probe(writer.path)["duration"] <= 4.5
