"""Live cameras on loopback for the tests: HLS, MPEG-TS and MJPEG over HTTP, MPEG-TS over UDP and RTP.

Each camera encodes `pipelines.synthetic.frame_image` frames as they fall due on the wall clock, so
a reader gets a real-time stream with steadily increasing timestamps, as from a real camera, and
never the burst a file would give. 160x120 at 25 fps, so a camera costs little CPU.

    with HttpCameras(tmp_path, hls=True) as cams:      # or UdpCamera("udp") / UdpCamera("rtp")
        cams.url("/hls/index.m3u8"), cams.url("/live.ts"), cams.url("/live.mjpg")

`stop()` (or leaving the `with`) ends every thread it started, joins it and closes every socket; a
thread that does not end fails the test.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av

from pipelines.synthetic import frame_image

FPS = 25
SIZE = (160, 120)
BOUNDARY = "reelflowframe"
JOIN_S = 10


def camera_frames(stop: threading.Event, fps: int = FPS, size: tuple[int, int] = SIZE) -> Iterator[av.VideoFrame]:
    """Frames numbered from 0 (pts = i in 1/fps), each released when its time comes, until `stop`."""
    start = time.monotonic()
    i = 0
    while not stop.wait(max(0.0, start + i / fps - time.monotonic())):
        frame = av.VideoFrame.from_ndarray(frame_image(i, *size), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        yield frame
        i += 1


def encode_h264(container: av.container.OutputContainer, stop: threading.Event, fps: int = FPS) -> None:
    """Encode the camera into an open output container until `stop`, then close it (no flush: cut off)."""
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        # A keyframe every second: HLS cuts its segments there and a late joiner can start there;
        # zerolatency: no lookahead or B-frames, each frame leaves the encoder at once.
        stream.codec_context.gop_size = fps
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for frame in camera_frames(stop, fps):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()  # the trailer cannot reach a client that went away either
        raise
    container.close()


def _join(thread: threading.Thread) -> None:
    thread.join(JOIN_S)
    assert not thread.is_alive(), f"{thread.name} did not stop"


class _Handler(SimpleHTTPRequestHandler):
    """`/live.ts` and `/live.mjpg`: a camera per client, until it hangs up or the server stops;
    anything else: a file of the served directory (the HLS playlist and segments)."""

    timeout = 5  # a client that stops reading cannot hold a handler thread (and the server's close)
    extensions_map = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", "": "application/octet-stream"}

    def do_GET(self):
        if self.path == "/live.ts":
            self._stream("video/mp2t", self._mpegts)
        elif self.path == "/live.mjpg":
            self._stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}", self._mjpeg)
        else:
            super().do_GET()

    def _stream(self, content_type: str, body) -> None:
        # HTTP/1.0 with no Content-Length: the body is the stream, it ends when the connection does.
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.server.clients += 1
        # A write failing means the client went away (PyAV raises its own errors for a failed write
        # callback); a server that broke otherwise shows as a client that got nothing.
        with contextlib.suppress(OSError, av.FFmpegError):
            body(self.server.stop)

    def _mpegts(self, stop: threading.Event) -> None:
        # flush_packets: each packet goes out as soon as it is muxed, not when a 32 KiB buffer fills.
        encode_h264(av.open(self.wfile, "w", format="mpegts", options={"flush_packets": "1"}), stop, self.server.fps)

    def _mjpeg(self, stop: threading.Event) -> None:
        jpeg = av.CodecContext.create("mjpeg", "w")
        jpeg.width, jpeg.height = SIZE
        jpeg.pix_fmt = "yuvj420p"
        jpeg.time_base = Fraction(1, self.server.fps)
        for frame in camera_frames(stop, self.server.fps):
            for packet in jpeg.encode(frame.reformat(format="yuvj420p")):
                data = bytes(packet)
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                                 .encode() + data + b"\r\n")

    def log_message(self, format, *args):  # quiet: pytest shows stderr of failed tests only anyway
        pass


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (ThreadingHTTPServer would leave them running as daemons).
    daemon_threads = False
    block_on_close = True


class HttpCameras:
    """http://127.0.0.1:PORT/live.ts, /live.mjpg, and with `hls=True` a live HLS camera at /hls/index.m3u8
    (1 s segments, the last 5 in the playlist, older ones deleted, as a live encoder does); all at `fps`."""

    def __init__(self, directory: Path, hls: bool = False, fps: int = FPS):
        self.directory, self.hls, self.fps = Path(directory), hls, fps
        self.stop_event = threading.Event()
        handler = functools.partial(_Handler, directory=str(self.directory))
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.stop, self.server.fps, self.server.clients = self.stop_event, fps, 0
        self.port = self.server.server_address[1]
        self.threads: list[threading.Thread] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def clients(self) -> int:
        """Streaming responses begun so far (each /live.ts or /live.mjpg request)."""
        return self.server.clients

    def start(self) -> HttpCameras:
        self._spawn(self.server.serve_forever, "http-cameras")
        if self.hls:
            playlist = self.directory / "hls" / "index.m3u8"
            playlist.parent.mkdir(parents=True, exist_ok=True)
            options = {"hls_time": "1", "hls_list_size": "5", "hls_flags": "delete_segments+omit_endlist",
                       "hls_segment_filename": str(playlist.parent / "seg%05d.ts")}
            self._spawn(lambda: encode_h264(av.open(str(playlist), "w", format="hls", options=options),
                                            self.stop_event, self.fps), "hls-camera")
            deadline = time.monotonic() + 10  # the first segment is out after a second
            while not (playlist.exists() and ".ts" in playlist.read_text()):
                if time.monotonic() > deadline or not self.threads[-1].is_alive():
                    self.stop()
                    raise AssertionError("the HLS camera wrote no segment")
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()  # serve_forever returns
        self.server.server_close()  # closes the socket and joins the handler threads
        for thread in self.threads:
            _join(thread)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def __enter__(self) -> HttpCameras:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_udp_ports(count: int = 1) -> int:
    """A free even UDP port on 127.0.0.1 with the next `count - 1` ports free too (RTP uses port + 1 for RTCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
        try:
            for k, s in enumerate(socks):
                s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free UDP ports")


class UdpCamera:
    """MPEG-TS sent to udp://127.0.0.1:PORT (7 TS packets a datagram, as IPTV does), or with
    `scheme="rtp"` as RTP (payload type 33, MPEG-TS) to rtp://127.0.0.1:PORT, RTCP on PORT + 1.
    Give `port` to send to the same reader again after a `stop()`."""

    def __init__(self, scheme: str = "udp", port: int | None = None):
        self.scheme = scheme
        self.port = port or free_udp_ports(2 if scheme == "rtp" else 1)
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> UdpCamera:
        if self.scheme == "rtp":
            target, fmt = self.url, "rtp_mpegts"
        else:
            target, fmt = f"{self.url}?pkt_size=1316", "mpegts"
        self.thread = threading.Thread(target=lambda: encode_h264(av.open(target, "w", format=fmt), self.stop_event),
                                       name=f"{self.scheme}-camera", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            _join(self.thread)

    def __enter__(self) -> UdpCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
