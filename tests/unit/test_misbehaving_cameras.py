"""Cameras that misbehave (issue 17, part 4): one that accepts the connection and sends nothing, one
that sends garbage, one that changes resolution mid-stream. Each ends in a counted reconnect with a
one-line reason, or in windows that go on, and never in a stall or a crash. (A server that speaks
RTSP over one lower transport only: tests/unit/test_rtsp.py.)"""

from __future__ import annotations

import os
import socket
import threading
import time
from fractions import Fraction

import pytest

from pipelines.live import LiveSource, live_windows
from pipelines.synthetic import make_video


class MisbehavingServer:
    """A TCP server on loopback that accepts every connection and then says nothing (`silent`) or
    sends random bytes (`garbage`; after an HTTP 200 header when `http`) until stopped."""

    def __init__(self, behaviour: str, http: bool = False):
        self.behaviour, self.http = behaviour, http
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> MisbehavingServer:
        self.sock.settimeout(0.2)
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), f"{thread.name} did not stop"
        self.sock.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"misbehaving-{len(self.threads)}")
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1)
            try:
                if self.http and self.behaviour == "garbage":
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
                while not self.stop.wait(0.02):
                    if self.behaviour == "garbage":
                        conn.sendall(os.urandom(4096))
            except OSError:  # the reader gave up on us and closed: fine
                pass


def run_for(source: LiveSource, seconds: float) -> tuple[list, float]:
    """The windows `source` gives in `seconds`, and how long stopping it took."""
    stop = threading.Event()
    clips: list = []
    thread = threading.Thread(target=lambda: clips.extend(live_windows(source.frames(stop), 0.8, 4)), daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    asked = time.monotonic()
    thread.join(timeout=15)
    assert not thread.is_alive(), "the reader did not stop"
    return clips, time.monotonic() - asked


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_camera_that_accepts_and_sends_nothing_is_a_counted_reconnect(scheme):
    with MisbehavingServer("silent") as server:
        source = LiveSource(f"{scheme}://127.0.0.1:{server.port}/stream", open_timeout_s=1.0, stale_s=1.0,
                            backoff_s=0.1, max_backoff_s=0.3)
        clips, stopping_s = run_for(source, 5.0)
    assert clips == [] and stopping_s < 3
    assert server.accepted >= 2 and source.stats.reconnects >= 2 and source.stats.gaps >= 2
    error = source.stats.last_error
    assert error and "\n" not in error and "Errno" not in error and len(error) < 200, error
    if scheme == "rtsp":  # auto transport: both were tried, and the error says over which
        assert "RTSP over" in error
    else:
        assert "no answer within 1 s" in error


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_camera_that_sends_garbage_is_a_counted_reconnect(scheme):
    with MisbehavingServer("garbage", http=scheme == "http") as server:
        source = LiveSource(f"{scheme}://127.0.0.1:{server.port}/stream", open_timeout_s=1.0, stale_s=1.0,
                            backoff_s=0.1, max_backoff_s=0.3)
        clips, stopping_s = run_for(source, 5.0)
    assert clips == [] and stopping_s < 3
    assert server.accepted >= 2 and source.stats.reconnects >= 2 and source.stats.frames == 0
    assert source.stats.last_error and "\n" not in source.stats.last_error and len(source.stats.last_error) < 300


def test_a_resolution_change_mid_stream_keeps_the_windows_coming(tmp_path):
    """An MPEG-TS stream whose camera switches from 320x240 to 160x120 after 2 s (a new SPS, as a
    camera's settings change gives): the windows across and after the change are all made, each
    of frames of one size."""
    first, second, stream = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "switch.ts"
    make_video(first, size=(320, 240), fps=25, pts=list(range(50)), time_base=Fraction(1, 25), bframes=False)
    make_video(second, size=(160, 120), fps=25, pts=list(range(50, 100)), time_base=Fraction(1, 25), bframes=False)
    stream.write_bytes(first.read_bytes() + second.read_bytes())
    source = LiveSource(str(stream), loop=False)
    clips, _ = run_for(source, 7.0)  # 4 s of video in real time, with room for a busy machine
    clips = clips[:5]  # the five 0.8 s windows of the first play (then the source ends, and is opened again)
    assert [c.index for c in clips] == list(range(5)), [c.index for c in clips]
    assert {c.frames.shape[1:] for c in clips[:2]} == {(240, 320, 3)}
    assert {c.frames.shape[1:] for c in clips[3:5]} == {(120, 160, 3)}
    assert all(len({f.shape for f in c.frames}) == 1 for c in clips)
