"""Which sources a job may open, and the bounds a video must stay within.

Checked before FFmpeg opens anything: local paths must lie under an allowed root (after resolving
links), URLs must use an allowed scheme (and host, if hosts are listed), and nothing under /dev is
opened but a capture device `/dev/videoN`, for a live stream, when `allow_devices` is on
(REELFLOW_ALLOW_DEVICES). FFmpeg itself is then opened with a protocol whitelist, and a video over
the pixel, duration or size bounds is refused before any frame is decoded.

    >>> policy = SourcePolicy(allowed_roots=(Path("/videos"),))
    >>> policy.check("/videos/a.mp4")
    '/videos/a.mp4'
    >>> policy.check("/etc/passwd")
    Traceback (most recent call last):
    pipelines.errors.SourceNotAllowed: '/etc/passwd' is outside the allowed roots (/videos); ...
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.errors import SourceNotAllowed, VideoError, one_line

URL_SCHEMES = frozenset({"http", "https"})
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "udp", "rtp"})
# What a live source may use underneath: RTSP with its RTP/UDP/TCP transports (SRTP when the SDP
# has keys), HTTP(S) live (HLS, with crypto for AES-128 segments; MPEG-TS, MJPEG), UDP and RTP
# (which sends over udp). Never `file`: a remote HLS playlist could list file:///etc/... segments.
STREAM_PROTOCOLS = "rtsp,rtsps,rtp,srtp,udp,tcp,tls,http,https,crypto"
# A capture device (Video4Linux2) is opened as a file by FFmpeg's v4l2 demuxer, and by nothing else.
DEVICE = re.compile(r"^/dev/video[0-9]+$")
DEVICE_PROTOCOLS = "file"
DEVICE_FORMATS = "v4l2"
# `name:` or `name,` before any slash is FFmpeg's protocol syntax (concat:, subfile,, pipe:, data:...):
# refused, so that nothing reaches FFmpeg that it would read as anything but a plain file.
FFMPEG_PROTOCOL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)[:,]")
# Cloud metadata services: never a video, always refused (link-local addresses are refused too).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
METADATA_ADDRESSES = frozenset(map(ipaddress.ip_address, ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")))
# FFmpeg protocols a job may use: files, or HTTP(S) with what HLS and TLS need underneath.
FILE_PROTOCOLS = "file"
URL_PROTOCOLS = "http,https,tcp,tls,crypto,hls,data"
# Demuxers a local file may use: plain containers only, nothing that reads other files or URLs
# (playlists, concat lists). Raw streams too: H.264, HEVC, MJPEG (jpeg_pipe: JPEGs one after another).
FILE_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,h264,hevc,mjpeg,jpeg_pipe,asf,nut,ivf,obu"


@dataclass(frozen=True)
class SourcePolicy:
    allowed_roots: tuple[Path, ...] | None = None  # None: any local path
    url_schemes: frozenset[str] = URL_SCHEMES
    url_hosts: frozenset[str] | None = None  # None: any host
    max_pixels: int = 3840 * 2160  # width x height
    max_duration_s: float = 4 * 3600
    max_bytes: int = 50 * 2**30
    max_frames: int = 4 * 3600 * 120
    allow_devices: bool = False  # capture devices /dev/videoN as live sources (REELFLOW_ALLOW_DEVICES)
    # URLs on private, loopback or other internal addresses: allowed for "streams" (cameras live on
    # private networks), for "all" sources, or "none" (REELFLOW_PRIVATE_URLS)
    private_urls: str = "streams"
    roots_note: str = field(default="set REELFLOW_ALLOWED_ROOTS", compare=False)

    def check(self, source: str) -> str:
        """The source to open, or SourceNotAllowed saying why and how to allow it."""
        if "://" in source:
            parts = urlsplit(source)
            if parts.scheme not in self.url_schemes:
                what = "streams" if self.url_schemes == STREAM_SCHEMES else "jobs"
                raise SourceNotAllowed(f"URL scheme {parts.scheme!r} is not allowed for {what} "
                                       f"(allowed: {', '.join(sorted(self.url_schemes))})")
            if self.url_hosts is not None and parts.hostname not in self.url_hosts:
                raise SourceNotAllowed(f"host {parts.hostname!r} is not allowed; add it to REELFLOW_ALLOWED_URL_HOSTS")
            self._check_host(source, parts.hostname or "")
            return source
        if (protocol := FFMPEG_PROTOCOL.match(source)) and not source.startswith(("/", ".", "~")):
            raise SourceNotAllowed(f"FFmpeg protocol {protocol[1]!r} is not allowed ({source[:60]!r}); give a "
                                   "file path (./name for a file whose name has a colon) or an http(s) URL")
        try:
            path = Path(source).expanduser()
            real = path.resolve()
            if str(path).startswith("/dev/") or real.is_relative_to("/dev"):
                return self._check_device(source, path)
            self._check_root(source, real)
            size = path.stat().st_size
        except FileNotFoundError:
            raise VideoError(f"cannot read {source!r}: no such file; check the path") from None
        except (OSError, RuntimeError, ValueError) as e:  # a name too long, a link loop, a NUL byte...
            raise VideoError(f"cannot read {source[:100]!r}: {one_line(e)}; check the path") from None
        if size > self.max_bytes:
            raise SourceNotAllowed(f"{source!r} is {size / 2**30:.1f} GiB, over the {self.max_bytes / 2**30:.0f} GiB "
                                   "limit (REELFLOW_MAX_BYTES)")
        _refuse_lists(source, path)
        return str(path)

    def _check_root(self, source: str, real: Path) -> None:
        if self.allowed_roots is not None and not any(real == r or r in real.parents for r in self.allowed_roots):
            roots = ":".join(str(r) for r in self.allowed_roots)
            raise SourceNotAllowed(f"{source!r} is outside the allowed roots ({roots}); {self.roots_note}")

    def check_model(self, model: str) -> None:
        """A Hugging Face model directory a job names (`hf:/dir`) is read only under the allowed
        roots, like its videos; table models and hub ids (`hf:org/name`) pass."""
        if model.startswith("hf:/"):
            try:
                real = Path(model[3:]).resolve()
            except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL byte...
                raise SourceNotAllowed(f"model {model[:100]!r} cannot be read ({e}); check the directory") from None
            self._check_root(model, real)

    def _check_device(self, source: str, path: Path) -> str:
        # Both the name and what it resolves to: a link named /dev/video0 to a disk stays refused.
        if not (DEVICE.match(str(path)) and DEVICE.match(str(path.resolve()))):
            raise SourceNotAllowed(f"{source!r} is under /dev but not a capture device (/dev/videoN); "
                                   "only those may be opened, as live streams")
        if self.url_schemes != STREAM_SCHEMES:
            raise SourceNotAllowed(f"{source!r} is a capture device: watch it as a live stream "
                                   "(reelflow watch), a job reads files and URLs")
        if not self.allow_devices:
            raise SourceNotAllowed(f"capture devices are off: set REELFLOW_ALLOW_DEVICES=1 to watch {source}")
        return str(path)  # not stat'ed: a camera unplugged now is a stream that reconnects later

    def _check_host(self, source: str, host: str) -> None:
        """Link-local and metadata addresses never; private ones as `private_urls` says."""
        live = self.url_schemes == STREAM_SCHEMES
        if host.lower().rstrip(".") in METADATA_HOSTS:
            raise SourceNotAllowed(f"{source!r} is a cloud metadata service: never allowed")
        try:
            addresses = {ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        except (socket.gaierror, UnicodeError, ValueError):
            if live:  # a camera whose name does not resolve yet: the stream retries
                return
            raise VideoError(f"cannot resolve the host of {source!r}; check the URL") from None
        for address in addresses:
            if address in METADATA_ADDRESSES or address.is_link_local or (address.is_multicast and not live):
                raise SourceNotAllowed(f"{source!r} points at {address}, a link-local or metadata address: "
                                       "never allowed")
            internal = address.is_private or address.is_loopback or address.is_reserved or address.is_unspecified
            if internal and not address.is_multicast and not (self.private_urls == "all" or
                                                               (live and self.private_urls == "streams")):
                raise SourceNotAllowed(f"{source!r} points at the internal address {address}; allow it with "
                                       f"REELFLOW_PRIVATE_URLS={'streams' if live else 'all'}")

    def check_destination(self, url: str) -> None:
        """A URL results are sent to (a webhook, an MQTT broker): never a link-local or metadata
        address; an internal one as for cameras (REELFLOW_PRIVATE_URLS); a name that does not
        resolve yet passes (the deliveries wait for it)."""
        host = urlsplit(url).hostname or ""
        self.for_streams()._check_host(host, host)  # the host alone in messages: the URL may hold a password

    def for_streams(self) -> SourcePolicy:
        """The same policy for live sources: stream URL schemes instead of file ones."""
        return replace(self, url_schemes=STREAM_SCHEMES)

    def ffmpeg_options(self, source: str) -> dict[str, str]:
        if DEVICE.match(source):
            return {"protocol_whitelist": DEVICE_PROTOCOLS, "format_whitelist": DEVICE_FORMATS}
        if "://" in source:
            live = self.url_schemes == STREAM_SCHEMES
            return {"protocol_whitelist": STREAM_PROTOCOLS if live else URL_PROTOCOLS}
        return {"protocol_whitelist": FILE_PROTOCOLS, "format_whitelist": FILE_FORMATS}

    def check_video(self, source: str, width: int, height: int, duration_s: float | None,
                    frames: int | None = None) -> None:
        """The bounds, from what the container says (and again while decoding: pipelines.decode)."""
        if frames is not None and frames > self.max_frames:
            raise SourceNotAllowed(f"{source!r} has {frames} frames, over the {self.max_frames}-frame limit "
                                   "(REELFLOW_MAX_FRAMES)")
        if width * height > self.max_pixels:
            raise SourceNotAllowed(f"{source!r} is {width}x{height}, over the {self.max_pixels}-pixel limit "
                                   "(REELFLOW_MAX_PIXELS)")
        if duration_s is not None and duration_s > self.max_duration_s:
            raise SourceNotAllowed(f"{source!r} lasts {duration_s:.0f} s, over the {self.max_duration_s:.0f} s "
                                   "limit (REELFLOW_MAX_DURATION_S)")


# Text files FFmpeg would follow to other files or URLs; the format whitelist stops them anyway,
# this only names the problem.
LIST_MAGIC = {b"#EXTM3U": "an HLS playlist", b"ffconcat": "an FFmpeg concat list", b"[playlist]": "a playlist"}


def _refuse_lists(source: str, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(16).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return  # unreadable: FFmpeg says so when it opens it
    for magic, what in LIST_MAGIC.items():
        if head.startswith(magic):
            raise SourceNotAllowed(f"{source!r} is {what}, which points at other files: give the video itself")


def open_checked(source: str, policy: SourcePolicy, clip_s: float, stride_s: float | None) -> tuple[str, dict, int]:
    """Check a job's source against the policy, open it once to check its bounds and count its
    segments; returns (source to open, FFmpeg options, number of segments)."""
    from pipelines.decode import open_video  # PyAV: the CLI and the settings import this module without it
    from pipelines.sampler import plan_video

    source = policy.check(source)
    options = policy.ffmpeg_options(source)
    with open_video(source, options=options, limits=policy) as video:
        policy.check_video(source, video.info.width, video.info.height, video.info.duration_s, video.info.frames)
        return source, options, len(plan_video(video, clip_s, stride_s))
