#!/usr/bin/python3
"""A real RTSP server for the tests: GStreamer's gst-rtsp-server serving an H.264 .mp4/.mkv file
as a live camera, looped forever, to any number of clients (TCP or UDP transport).

Runs under Debian's /usr/bin/python3 (`make system-deps` installs python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good and -bad), not the project's venv.

    /usr/bin/python3 tests/support/rtsp_server.py FILE [--host 127.0.0.1] [--port 8554|0] [--mount /cam1]
                                                  [--protocols both|tcp|udp]

Prints "READY rtsp://HOST:PORT/MOUNT" once the port is bound; SIGTERM or SIGINT stop it. No
re-encoding: demux -> h264parse -> rtph264pay (a few % of a core).
"""
import argparse
import signal
import sys
import threading

import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)


class LoopMedia(GstRtspServer.RTSPMedia):
    """Loops with non-flushing segment seeks, so RTP timestamps keep increasing across loops."""

    def do_prepared(self):
        self._parse = next(e for e in self._elements() if e.get_factory().get_name() == "h264parse")
        self._last_dur = 0
        self._offset = 0
        self._parse.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_buffer)
        # The flushing seek clears the streams' segment until the next buffer goes through; a PLAY
        # in that gap aborts gst-rtsp-server 1.22 (gst_rtsp_media_get_rates: assertion failed).
        # So the media counts as prepared only once a buffer has passed the payloader again.
        flowing = threading.Event()
        pay = next(e for e in self._elements() if e.get_name() == "pay0").get_static_pad("src")

        def first_buffer(pad, info):
            flowing.set()
            return Gst.PadProbeReturn.REMOVE

        pay.add_probe(Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST, first_buffer)
        self._seek(Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT)
        if not flowing.wait(10):
            print("no data after the looping seek", file=sys.stderr, flush=True)

    def _elements(self):
        it = self.get_element().iterate_recurse()
        while True:
            ok, e = it.next()
            if ok != Gst.IteratorResult.OK:
                return
            yield e

    def _on_buffer(self, pad, info):
        d = info.get_buffer().duration
        if d != Gst.CLOCK_TIME_NONE:
            self._last_dur = d
        return Gst.PadProbeReturn.OK

    def _seek(self, flags):
        if not self.get_element().seek(1.0, Gst.Format.TIME, flags,
                                       Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1):
            print("segment seek failed", file=sys.stderr, flush=True)

    def do_handle_message(self, message):
        if message.type == Gst.MessageType.SEGMENT_DONE:
            # qtdemux accumulates the next loop's base from the *last frame's pts*, so each
            # loop would start one frame early (duplicate pts); shift by one frame per loop.
            self._offset += self._last_dur
            self._parse.get_static_pad("src").set_offset(self._offset)
            self._seek(Gst.SeekFlags.SEGMENT)
            return True
        return GstRtspServer.RTSPMedia.do_handle_message(self, message)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--mount", default="/cam1")
    ap.add_argument("--protocols", choices=["both", "tcp", "udp"], default="both",
                    help="the lower transports it accepts (a camera that speaks only one refuses the other)")
    a = ap.parse_args()
    demux = "matroskademux" if a.file.endswith((".mkv", ".webm")) else "qtdemux"
    # config-interval=1: SPS/PPS every second for late joiners (-1 makes FFmpeg split IDR frames
    # into two packets with the same pts).
    launch = (f'( filesrc location="{a.file}" ! {demux} ! h264parse '
              f'! rtph264pay name=pay0 pt=96 config-interval=1 )')
    server = GstRtspServer.RTSPServer(address=a.host, service=str(a.port))
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(launch)
    f.set_shared(True)  # one pipeline for all clients: they join a "live" stream
    lower = {"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP,
             "both": GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP}
    f.set_protocols(lower[a.protocols])
    f.set_media_gtype(LoopMedia.__gtype__)
    # FFmpeg's PLAY carries "Range: npt=0.000-"; on a seekable shared media gst-rtsp-server would
    # flush-seek to 0 for each new client (rewinding everyone and cancelling the loop).
    # CLOCK_AND_OFFSET makes gst-rtsp-server treat the media as not seekable.
    f.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    server.get_mount_points().add_factory(a.mount, f)
    if server.attach(None) == 0:
        sys.exit(f"cannot bind {a.host}:{a.port}")
    # --port 0 picks a free port; the real one is printed on the READY line.
    print(f"READY rtsp://{a.host}:{server.get_bound_port()}{a.mount}", flush=True)
    loop = GLib.MainLoop()
    for s in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, s, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()
