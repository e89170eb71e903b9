"""Live sources against real servers on loopback (tests/support/live_servers.py): HLS, MPEG-TS and MJPEG
over HTTP, MPEG-TS over UDP and RTP, RTSP; and capture devices, off unless allowed.

Each stream is opened as a worker opens it: checked by the stream policy, with its FFmpeg options
(the protocol whitelist among them).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import SourceNotAllowed
from pipelines.live import LiveSource, live_windows
from pipelines.sources import STREAM_PROTOCOLS, SourcePolicy
from pipelines.synthetic import make_video
from services.settings import Settings
from support.live_servers import FPS, SIZE, HttpCameras, UdpCamera
from support.rtsp_camera import Camera

CLIP_S = 0.8
STREAMS = SourcePolicy().for_streams()


def open_live(url: str, policy: SourcePolicy = STREAMS, **kwargs) -> LiveSource:
    url = policy.check(url)
    return LiveSource(url, options=policy.ffmpeg_options(url), **kwargs)


class Reader:
    """Windows of a source read on a thread, from `start()` until `stop()`, which must end it promptly."""

    def __init__(self, source: LiveSource):
        self.source, self.stop_event = source, threading.Event()
        self.clips, self.times = [], []  # windows; stream time of each frame
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        def noted(frames):
            for frame in frames:
                self.times.append(frame.time_s)
                yield frame

        for clip in live_windows(noted(self.source.frames(self.stop_event)), CLIP_S, 4):
            self.clips.append(clip)

    def start(self) -> Reader:
        self.started = time.time()
        self.thread.start()
        return self

    def stop(self) -> None:
        """Within the source's `stale_s` (a read waiting for data only sees `stop` when it times out)."""
        asked = time.monotonic()
        self.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the live source did not stop"
        self.stop_took = time.monotonic() - asked
        assert self.stop_took < self.source.stale_s + 1.0
        assert self.source.stats.state == "stopped"


def read_for(source: LiveSource, seconds: float) -> Reader:
    reader = Reader(source).start()
    time.sleep(seconds)
    reader.stop()
    return reader


def assert_real_time(reader: Reader, seconds: float, fps: int, ahead_s: float = 0.3, tolerance_s: float = 0.5,
                     slack: int = 1):
    """Consecutive windows of moving pictures, the right number of frames each (to `slack`, and on
    average to 1), coming at the rate of the wall clock; stream time never more than `ahead_s` ahead
    of it (what the server had buffered)."""
    clips, started = reader.clips, reader.started
    stats = reader.source.stats
    assert len(clips) >= (seconds - 2.0) / CLIP_S, f"{len(clips)} windows in {seconds} s: {stats.as_dict()}"
    assert [c.index for c in clips] == list(range(len(clips)))  # from stream time 0, none skipped
    assert all(c.frames.shape == (4, SIZE[1], SIZE[0], 3) and c.frames.dtype == np.uint8 for c in clips)
    assert all(np.any(c.frames[0] != c.frames[-1]) for c in clips)  # the picture moves: not one frame repeated
    expected, counts = round(CLIP_S * fps), [c.frame_count for c in clips[1:]]
    assert all(abs(n - expected) <= slack for n in counts) and abs(np.mean(counts) - expected) <= 1, counts
    wall = clips[-1].captured_at - clips[1].captured_at
    stream = clips[-1].end_s - clips[1].end_s
    assert wall == pytest.approx(stream, abs=tolerance_s), "windows do not come at the rate of the wall clock"
    for clip in clips:  # 2 s: connecting, and FFmpeg reading half a second to find the streams
        late = clip.captured_at - started - clip.end_s
        assert -ahead_s <= late <= 2.0, f"window {clip.index} came {late:.2f} s after its end on the wall clock"
    assert stats.gaps == 0 and stats.reconnects == 0


@pytest.mark.timeout(60)
def test_hls_live_playlist(tmp_path):
    with HttpCameras(tmp_path, hls=True) as cams:
        reader = read_for(open_live(cams.url("/hls/index.m3u8")), 6.0)
        segments = sorted(p.name for p in (tmp_path / "hls").glob("*.ts"))
    # FFmpeg starts up to 3 segments (3 s) back from a live playlist's end, then follows it as it
    # grows; frames come a whole segment at a time, so the rate is checked to a segment.
    assert_real_time(reader, 6.0, FPS, ahead_s=3.5, tolerance_s=1.2)
    assert reader.clips[-1].end_s >= 5.0  # past the segments there were at the start: it followed the playlist
    assert "seg00000.ts" not in segments  # ... while the encoder deleted old ones, as a live one does


@pytest.mark.timeout(60)
def test_mpegts_over_http(tmp_path):
    with HttpCameras(tmp_path) as cams:
        reader = read_for(open_live(cams.url("/live.ts")), 5.0)
        assert cams.clients == 1
    assert_real_time(reader, 5.0, FPS)


@pytest.mark.timeout(60)
def test_mjpeg_over_http_is_timed_by_arrival(tmp_path):
    # 10 fps: multipart JPEG parts carry no timestamps and FFmpeg makes up 25 fps ones, which would
    # put 20 frames in a 0.8 s window and stretch stream time 2.5 times.
    with HttpCameras(tmp_path, fps=10) as cams:
        reader = read_for(open_live(cams.url("/live.mjpg")), 5.0)
        assert cams.clients == 1
    # Timed by arrival, a window's count follows the scheduling of two busy threads: a frame late by
    # 0.2 s moves 2 frames to the next window.
    assert_real_time(reader, 5.0, 10, slack=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme", ["udp", "rtp"])
def test_mpegts_over_udp_and_rtp(scheme):
    with UdpCamera(scheme) as cam:
        reader = read_for(open_live(cam.url), 5.0)
    assert_real_time(reader, 5.0, FPS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_under_the_stream_whitelist(tmp_path, transport):
    # tests/unit/test_rtsp.py opens RTSP without the worker's options; this is what a worker opens.
    make_video(tmp_path / "camera.mp4", seconds=3.0, fps=FPS, size=SIZE)
    camera = Camera(tmp_path / "camera.mp4").start()
    try:
        reader = read_for(open_live(camera.url, transport=transport), 4.0)
    finally:
        camera.stop()
    assert_real_time(reader, 4.0, FPS)


@pytest.mark.timeout(60)
def test_a_silent_udp_sender_is_a_counted_gap_and_windows_resume():
    # UDP has no connection to lose: only the read timeout (stale_s) notices that packets stopped.
    camera = UdpCamera("udp").start()
    reader = Reader(open_live(camera.url, stale_s=1.5, backoff_s=0.2, max_backoff_s=0.5)).start()
    try:
        time.sleep(2.5)
        camera.stop()
        silent = time.monotonic()
        time.sleep(3.0)
        camera = UdpCamera("udp", port=camera.port).start()
        silent = time.monotonic() - silent
        time.sleep(3.0)
    finally:
        camera.stop()
        reader.stop()
    stats = reader.source.stats
    assert (stats.gaps, stats.reconnects, stats.last_error) == (1, 1, "no data for 1.5 s"), stats.as_dict()
    jump, gap_start, gap_end = max((b - a, a, b) for a, b in zip(reader.times, reader.times[1:]))
    # Stream time went on through the silence as the wall clock did: not from when the last frames
    # before it came out (late, flushed at the read timeout), and not more than a reconnect later.
    assert silent <= jump <= silent + 1.5
    indices = [c.index for c in reader.clips]
    assert indices == sorted(set(indices))  # never reused
    assert len([c for c in reader.clips if c.end_s <= gap_start]) >= 2
    assert len([c for c in reader.clips if c.start_s >= gap_end]) >= 2  # windows resumed
    # only a window holding the last frame before the silence can be cut short by it
    assert all(c.start_s <= gap_start < c.end_s for c in reader.clips if c.cut)


@pytest.mark.timeout(60)
def test_a_remote_hls_playlist_cannot_read_local_files(tmp_path):
    # FFmpeg's HLS demuxer would follow a file:// segment of a playlist fetched over HTTP; only the
    # stream protocol whitelist keeps a camera URL from reading the worker's files.
    make_video(tmp_path / "local.ts", seconds=2.0, fps=FPS, size=SIZE)
    (tmp_path / "evil.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                        f"#EXTINF:2.0,\nfile://{tmp_path}/local.ts\n#EXT-X-ENDLIST\n")
    with HttpCameras(tmp_path) as cams:
        refused = read_for(open_live(cams.url("/evil.m3u8"), backoff_s=5.0), 2.0).source
        # The same playlist with `file` allowed does play: the refusal above is the whitelist's.
        url = cams.url("/evil.m3u8")
        control = read_for(LiveSource(url, options={"protocol_whitelist": STREAM_PROTOCOLS + ",file"}), 2.0).source
    assert refused.stats.frames == 0 and refused.stats.gaps == 1 and refused.stats.last_error
    assert control.stats.frames > 0
    assert "file" not in STREAM_PROTOCOLS.split(",")


# -- capture devices --

ALLOWED = SourcePolicy(allow_devices=True).for_streams()


@pytest.mark.parametrize("source, policy, error", [
    ("/dev/video0", STREAMS, "REELFLOW_ALLOW_DEVICES"),  # off by default
    ("/dev/video0", SourcePolicy(allow_devices=True), "watch it as a live stream"),  # jobs never read devices
    ("/dev/sda", ALLOWED, "not a capture device"),
    ("/dev/null", ALLOWED, "not a capture device"),
    ("/dev/video", ALLOWED, "not a capture device"),
    ("/dev/video0p1", ALLOWED, "not a capture device"),
    ("/dev/v4l/by-id/usb-cam-video-index0", ALLOWED, "not a capture device"),
    ("/dev/../etc/passwd", ALLOWED, "not a capture device"),
    ("/dev/video0", ALLOWED, None),
    ("/dev/video12", ALLOWED, None),
])
def test_only_capture_devices_and_only_when_allowed(source, policy, error):
    if error is None:
        assert policy.check(source) == source
        assert policy.ffmpeg_options(source) == {"protocol_whitelist": "file", "format_whitelist": "v4l2"}
        return
    with pytest.raises(SourceNotAllowed, match=error) as refused:
        policy.check(source)
    assert "\n" not in str(refused.value)


def test_a_link_to_a_device_is_refused(tmp_path):
    (tmp_path / "video0").symlink_to("/dev/null")  # named like a camera, a link to something else
    (tmp_path / "cam").symlink_to("/dev/video0")  # a camera, but under another name
    for link in ("video0", "cam"):
        with pytest.raises(SourceNotAllowed, match="not a capture device"):
            ALLOWED.check(str(tmp_path / link))


def test_the_setting_reaches_the_stream_policy(monkeypatch):
    monkeypatch.delenv("REELFLOW_ALLOW_DEVICES", raising=False)
    settings = Settings.from_env()
    assert not settings.allow_devices
    with pytest.raises(SourceNotAllowed, match="set REELFLOW_ALLOW_DEVICES=1 to watch /dev/video0"):
        settings.sources.for_streams().check("/dev/video0")
    for value in ("1", "true"):
        monkeypatch.setenv("REELFLOW_ALLOW_DEVICES", value)
        settings = Settings.from_env()
        assert settings.allow_devices and settings.sources.for_streams().check("/dev/video0") == "/dev/video0"
    monkeypatch.setenv("REELFLOW_ALLOW_DEVICES", "0")
    assert not Settings.from_env().sources.allow_devices


@pytest.mark.timeout(60)
def test_an_allowed_but_missing_device_is_a_counted_gap_and_stop_completes():
    assert not Path("/dev/video9").exists(), "this test needs /dev/video9 to be absent"
    source = open_live("/dev/video9", ALLOWED, backoff_s=0.1, max_backoff_s=0.4)
    reader = read_for(source, 1.5)
    assert reader.clips == [] and reader.stop_took < 1.0  # stop is seen while backing off
    stats = source.stats
    assert stats.frames == 0 and stats.connects == 0 and stats.gaps >= 2 and stats.reconnects >= 1
    assert stats.last_error == "capture device /dev/video9: No such file or directory"


@pytest.mark.timeout(60)
def test_a_device_is_read_through_v4l2_under_the_device_whitelist():
    # No camera here; /dev/null is a character device that FFmpeg's v4l2 demuxer opens and then
    # asks for its capabilities. ENOTTY says v4l2 ran: a plain file read would end or fail to probe,
    # and a format outside the whitelist would be refused before opening anything.
    source = LiveSource("/dev/null", format="v4l2", options=ALLOWED.ffmpeg_options("/dev/video0"), backoff_s=5.0)
    read_for(source, 0.5)
    assert source.stats.gaps == 1 and source.stats.last_error == "Inappropriate ioctl for device"
    assert LiveSource("/dev/video3").format == "v4l2" and LiveSource("rtsp://cam/1").format is None
