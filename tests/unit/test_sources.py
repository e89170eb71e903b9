"""Source policy: allowed roots, URL schemes and hosts, FFmpeg whitelists, size bounds."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest

from pipelines.errors import SourceNotAllowed, VideoError
from pipelines.sampler import sample_clips
from pipelines.sources import SourcePolicy, open_checked
from support.raw_streams import mjpeg_stream


@pytest.fixture
def roots(tmp_path, clip_10s):
    inside = tmp_path / "videos"
    inside.mkdir()
    (inside / "a.mp4").write_bytes(clip_10s.read_bytes())
    outside = tmp_path / "elsewhere.mp4"
    outside.write_bytes(b"x" * 10)
    os.symlink(outside, inside / "link.mp4")  # inside by name, outside in fact
    return inside, outside


@pytest.mark.parametrize(
    "source, policy, error",
    [
        ("{inside}/a.mp4", dict(allowed_roots="{inside}"), None),
        ("{outside}", dict(allowed_roots="{inside}"), "outside the allowed roots"),
        ("{inside}/link.mp4", dict(allowed_roots="{inside}"), "outside the allowed roots"),
        ("{inside}/../elsewhere.mp4", dict(allowed_roots="{inside}"), "outside the allowed roots"),
        ("{inside}/a.mp4", dict(max_bytes=1000), "over the"),
        ("{inside}/missing.mp4", dict(), "no such file"),
        ("https://93.184.215.14/a.mp4", dict(), None),  # a public address (not contacted: no DNS needed)
        ("https://cams.example/a.mp4", dict(), "cannot resolve"),  # no such host: a job fails at once
        ("ftp://cams.example/a.mp4", dict(), "scheme 'ftp'"),
        ("file:///etc/passwd", dict(), "scheme 'file'"),
        ("https://evil.example/a.mp4", dict(url_hosts=frozenset({"cams.example"})), "host 'evil.example'"),
        ("http://169.254.169.254/latest/meta-data/", dict(), "metadata"),
        ("http://169.254.169.254/latest/meta-data/", dict(private_urls="all"), "metadata"),  # never
        ("http://[fe80::1]/a.mp4", dict(private_urls="all"), "link-local"),
        ("http://metadata.google.internal/computeMetadata/v1/", dict(), "metadata service"),
        ("http://127.0.0.1:8080/a.mp4", dict(), "REELFLOW_PRIVATE_URLS=all"),
        ("http://localhost/a.mp4", dict(), "internal address"),
        ("http://10.1.2.3/a.mp4", dict(), "internal address"),
        ("http://127.0.0.1:8080/a.mp4", dict(private_urls="all"), None),
        ("concat:{inside}/a.mp4|/etc/passwd", dict(), "FFmpeg protocol 'concat'"),
        ("subfile,,start,0,end,9,,:{inside}/a.mp4", dict(), "FFmpeg protocol 'subfile'"),
        ("pipe:0", dict(), "FFmpeg protocol 'pipe'"),
        ("{inside}/" + "x" * 5000, dict(), "cannot read"),  # a name too long is an error, not a crash
    ],
)
def test_source_checks(roots, source, policy, error):
    inside, outside = roots
    source = source.format(inside=inside, outside=outside)
    if "allowed_roots" in policy:
        policy["allowed_roots"] = (Path(policy["allowed_roots"].format(inside=inside)).resolve(),)
    check = SourcePolicy(**policy)
    if error is None:
        assert check.check(source)
    else:
        with pytest.raises((SourceNotAllowed, VideoError), match=error) as err:
            check.check(source)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("source, default, with_none", [
    ("rtsp://10.0.0.7:554/stream1", True, False),  # cameras live on private networks
    ("rtsp://127.0.0.1:8554/cam", True, False),
    ("udp://239.0.0.1:1234", True, True),  # multicast
    ("rtsp://cam-not-resolvable-yet.example/s", True, True),  # may resolve later: the stream retries
    ("rtsp://169.254.169.254/x", False, False),  # link-local / metadata: never
    ("gopher://10.0.0.7/", False, False),
])
def test_live_streams_may_use_private_addresses_unless_told_not_to(source, default, with_none):
    for policy, allowed in ((SourcePolicy(), default), (SourcePolicy(private_urls="none"), with_none)):
        if allowed:
            assert policy.for_streams().check(source) == source
        else:
            with pytest.raises(SourceNotAllowed):
                policy.for_streams().check(source)


@pytest.mark.parametrize(
    "policy, error",
    [(dict(max_pixels=320 * 239), "over the 76480-pixel limit"), (dict(max_duration_s=5), "lasts 10 s")],
)
def test_video_bounds_are_checked_before_decoding(clip_10s, policy, error):
    with pytest.raises(SourceNotAllowed, match=error):
        open_checked(str(clip_10s), SourcePolicy(**policy), 1.6, None)


def test_a_playlist_cannot_pull_in_other_files(tmp_path, clip_10s):
    playlist = tmp_path / "list.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{clip_10s}\n#EXT-X-ENDLIST\n")
    with pytest.raises(SourceNotAllowed, match="an HLS playlist, which points at other files"):
        open_checked(str(playlist), SourcePolicy(), 1.6, None)
    # and were it not recognised (no #EXTM3U first), FFmpeg's format whitelist still refuses it
    disguised = tmp_path / "disguised.mp4"
    disguised.write_text(f"video\n#EXTM3U\n#EXTINF:10,\n{clip_10s}\n")
    with pytest.raises(VideoError):
        open_checked(str(disguised), SourcePolicy(), 1.6, None)


def test_an_ordinary_video_passes_and_is_counted(clip_10s):
    source, options, total = open_checked(str(clip_10s), SourcePolicy(), 1.6, None)
    assert (source, total) == (str(clip_10s), 7) and options["protocol_whitelist"] == "file"


def test_a_raw_mjpeg_stream_passes_the_format_whitelist(tmp_path):
    source, options, total = open_checked(str(mjpeg_stream(tmp_path / "cam.mjpeg", 50)), SourcePolicy(), 1.0, None)
    clips = list(sample_clips(source, 1.0, 4, open_options=options))
    assert total == 2 and [(c.segment.start_s, c.frame_count) for c in clips] == [(0.0, 25), (1.0, 25)]
    with av.open(source) as container:
        assert container.format.name == "jpeg_pipe"
    left = [c.frames[:, :, :70].mean() for c in clips]
    assert left[1] > left[0] + 50  # in order: each picture lighter


@pytest.mark.parametrize("policy, error", [(dict(max_frames=50), "51 frames, over the 50-frame limit"),
                                           (dict(max_duration_s=3), "over the 3 s limit")])
def test_the_limits_hold_while_decoding_whatever_the_header_said(clip_10s, policy, error):
    """Decoding straight away (no header check first), as if the header had lied: the frames stop it."""
    from pipelines.sampler import sample_clips

    clips = []
    with pytest.raises(SourceNotAllowed, match=error):
        for clip in sample_clips(str(clip_10s), 1.6, 4, limits=SourcePolicy(**policy)):
            clips.append(clip)
    assert len(clips) <= 2  # stopped early, not at the end
