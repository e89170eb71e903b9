"""Decoding and sampling: for every container/codec, time base, start offset and frame rate, each
segment gets exactly the frames the reference (`EncodedVideo.get_clip`) gives it."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import support.tutorial_reference  # noqa: F401  (aliases the torchvision module pytorchvideo needs)
from pytorchvideo.data.encoded_video import EncodedVideo
from pipelines.decode import Video, open_video
from pipelines.errors import VideoError
from pipelines.sampler import sample_clips, subsample_indices
from pipelines.synthetic import make_video
from support.raw_streams import raw_copy


def reference_clips(path, clips, num_frames):
    """The reference's uint8 frames (T, H, W, 3) and frame count for each of our segments."""
    video = EncodedVideo.from_path(str(path))
    out = []
    for clip in clips:
        data = video.get_clip(clip.segment.start_s, clip.segment.end_s)["video"]  # (C, T, H, W) float
        frames = data.permute(1, 2, 3, 0).to(torch.uint8).numpy()
        out.append((frames[subsample_indices(len(frames), num_frames)], len(frames)))
    video.close()
    return out


def assert_matches_reference(path, clip_s=1.0, num_frames=4, stride_s=None):
    clips = list(sample_clips(path, clip_s, num_frames, stride_s))
    assert clips, "no segments"
    for clip, (ref_frames, ref_count) in zip(clips, reference_clips(path, clips, num_frames)):
        assert clip.frame_count == ref_count, clip.segment
        assert clip.frames.shape == ref_frames.shape
        assert np.array_equal(clip.frames, ref_frames), clip.segment
    return clips


@pytest.mark.parametrize(
    "suffix, codec, options",
    [
        ("mp4", "libx264", {}),
        ("mkv", "libx265", {}),
        ("avi", "mpeg4", {}),
        ("webm", "libvpx-vp9", {}),
        ("mov", "libx264", {"bframes": False}),
        ("mkv", "libsvtav1", {}),
        ("mp4", "libx264", {"audio": True}),  # audio is ignored
    ],
)
def test_containers_and_codecs_match_the_reference(video_dir, suffix, codec, options):
    path = video_dir / f"matrix_{codec}_{len(options)}.{suffix}"
    make_video(path, seconds=2.5, fps=24, size=(256, 144), codec=codec, **options)
    clips = assert_matches_reference(path)
    assert [c.segment.start_s for c in clips] == [0.0, 1.0, 1.5]  # two full segments and the tail


@pytest.mark.parametrize(
    "name, fps, time_base, pts",
    [
        ("ntsc", Fraction(30000, 1001), Fraction(1001, 30000), None),  # 29.97 fps
        ("slow_7fps", 7, None, None),
        ("fast_60fps", 60, None, None),
        # variable frame rate: gaps and bursts, in a 1/1000 time base
        ("vfr", 30, Fraction(1, 1000), [0, 30, 50, 120, 130, 140, 400, 410, 433, 900, 1000, 1010, 1600, 2000, 2100, 2250, 2480]),
        # a stream whose first frame is at 5 s: times are relative to it
        ("offset", 25, Fraction(1, 90000), [450000 + i * 3600 for i in range(60)]),
    ],
)
def test_frame_times_match_the_reference(video_dir, name, fps, time_base, pts):
    path = video_dir / f"times_{name}.mp4"
    make_video(path, seconds=2.4, fps=fps, time_base=time_base, pts=pts, size=(160, 120))
    assert_matches_reference(path, clip_s=0.7, num_frames=3)


def assert_follows_rule(path, clip_s, stride_s=None):
    """Every segment holds exactly the frames with start <= t < end, in exact arithmetic."""
    with open_video(path) as video:
        info = video.info
        times = [Fraction(p - info.start_pts) * info.time_base for p, _ in video.frames()]
    clips = list(sample_clips(path, clip_s, num_frames=2, stride_s=stride_s, all_frames=True))
    for clip in clips:
        start, end = Fraction(str(clip.segment.start_s)), Fraction(str(clip.segment.end_s))
        got = [Fraction(p - info.start_pts) * info.time_base for p in clip.pts]
        assert got == [t for t in times if start <= t < end], clip.segment
    return clips


def test_each_segment_gets_the_frames_with_start_le_t_lt_end(video_dir):
    tb = Fraction(1, 1000)
    pts = [0, 45, 130, 210, 260, 333, 480, 520, 610, 777, 805, 920, 1010, 1130, 1290, 1420]
    path = video_dir / "rule.mkv"
    make_video(path, fps=30, time_base=tb, pts=pts, size=(64, 48), codec="libx264")
    clips = assert_follows_rule(path, clip_s=0.5, stride_s=0.25)
    assert len(clips) == 5  # 0, .25, .5, .75 and the tail .92-1.42


def test_mpeg_ts_with_its_start_offset(video_dir):
    # MPEG-TS streams start at a non-zero pts (here 1/12 s); the reference's seeking loses the tail
    # segment of such a file, so it is checked against the rule itself.
    path = video_dir / "stream.ts"
    make_video(path, seconds=2.5, fps=24, size=(128, 96), time_base=Fraction(1, 90000))
    clips = assert_follows_rule(path, clip_s=1.0)
    assert [(c.segment.start_s, c.frame_count) for c in clips] == [(0.0, 24), (1.0, 24), (1.5, 24)]


def test_short_video_gives_one_segment_with_all_its_frames(video_dir):
    path = video_dir / "short.mp4"
    make_video(path, seconds=0.5, fps=30, size=(64, 48))
    (clip,) = sample_clips(path, clip_s=1.6, num_frames=4)
    assert (clip.segment.start_s, clip.segment.end_s, clip.frame_count) == (0.0, 0.5, 15)
    assert clip.frames.shape == (4, 48, 64, 3)


def test_overlapping_strides_share_frames(clip_10s):
    clips = assert_matches_reference(clip_10s, clip_s=1.6, num_frames=4, stride_s=0.4)
    assert [c.segment.start_s for c in clips[:3]] == [0.0, 0.4, 0.8]
    assert clips[-1].segment.end_s == 10.0


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name", ["mm_test.avi", "sk_bigbuckbunny.mp4", "mm_test_video_structuralize.mp4", "sk_carphone_distorted.mp4"]
)
def test_real_videos_match_the_reference(shared_videos, name):
    assert_matches_reference(shared_videos / name, clip_s=1.6, num_frames=4)


def test_only_sampled_frames_are_kept(clip_10s):
    clips = list(sample_clips(clip_10s, clip_s=1.6, num_frames=4))
    assert all(len(c.pts) == 4 and c.frames.shape[0] == 4 for c in clips)
    assert [c.frame_count for c in clips] == [48, 48, 48, 48, 48, 48, 48]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not a video\n" * 100), "as video"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "as video"),
    ],
)
def test_unreadable_sources_raise_one_line_errors(tmp_path, make, message):
    path = tmp_path / "input.mp4"
    make(path)
    with pytest.raises(VideoError, match=message) as err:
        list(sample_clips(path, 1.6, 4))
    assert "\n" not in str(err.value)


def test_truncated_video_is_an_error_not_a_crash(tmp_path, clip_10s):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(clip_10s.read_bytes()[: clip_10s.stat().st_size // 2])
    with pytest.raises(VideoError):
        list(sample_clips(path, 1.6, 4))


def test_audio_only_file_says_there_is_no_video(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        list(sample_clips(path, 1.6, 4))


@pytest.mark.parametrize("codec, suffix, fmt", [("libx264", "mp4", "h264"), ("libx265", "mkv", "hevc")])
def test_a_raw_stream_without_timestamps_gives_the_same_clips_as_its_container(video_dir, codec, suffix, fmt):
    contained = video_dir / f"raw_source_{codec}.{suffix}"
    make_video(contained, seconds=2.5, fps=24, size=(160, 120), codec=codec)  # with B-frames
    raw = raw_copy(contained, video_dir / f"raw_stream.{fmt}", fmt)
    with open_video(raw) as video:
        assert video.info.fps == 24 and video.duration_s() == 2.5
    expected, got = list(sample_clips(contained, 1.0, 4)), list(sample_clips(raw, 1.0, 4))
    assert [(c.segment, c.frame_count) for c in got] == [(c.segment, c.frame_count) for c in expected]
    assert [c.frame_count for c in got] == [24, 24, 24]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(expected, got))


def clip_keys(clips):
    return [(c.segment, c.pts, c.frame_count) for c in clips]


@pytest.mark.parametrize("suffix, codec", [("mp4", "libx264"), ("mkv", "libx265"), ("avi", "mpeg4")])
def test_skipping_the_frames_no_segment_samples_gives_the_same_clips(video_dir, suffix, codec):
    path = video_dir / f"skip_{codec}.{suffix}"
    make_video(path, seconds=4.0, fps=30, size=(256, 144), codec=codec)  # with B-frames
    planned = list(sample_clips(path, 1.6, 4))
    every = list(sample_clips(path, 1.6, 4, skip_unsampled=False))
    assert clip_keys(planned) == clip_keys(every) and len(every) == 3
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(planned, every))


def test_frames_not_kept_that_nothing_depends_on_are_not_decoded(video_dir):
    path = video_dir / "keep.mp4"
    make_video(path, seconds=3.0, fps=30, size=(256, 144))  # two B-frames between references
    with open_video(path) as video:
        times = video.packet_times()
    assert list(times) == sorted(times) and len(times) == 90
    keep = set(times[::10])
    with open_video(path) as video:
        kept = {pts: frame.to_ndarray(format="rgb24") for pts, frame in video.frames(keep)}
    with open_video(path) as video:
        every = {pts: frame.to_ndarray(format="rgb24") for pts, frame in video.frames()}
    assert len(every) == 90 and keep <= kept.keys() and len(kept) < 70  # about a third are non-reference
    assert all(np.array_equal(kept[p], every[p]) for p in keep)


def test_a_plan_the_decoder_does_not_keep_to_falls_back_to_decoding_every_frame(video_dir, monkeypatch):
    path = video_dir / "wrong_plan.mp4"
    make_video(path, seconds=4.0, fps=30, size=(256, 144))
    every = list(sample_clips(path, 1.6, 4, skip_unsampled=False))
    real = Video.packet_times
    monkeypatch.setattr(Video, "packet_times", lambda self: real(self)[::2])  # misses half the frames
    fell_back = list(sample_clips(path, 1.6, 4))
    assert clip_keys(fell_back) == clip_keys(every)
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(fell_back, every))
    monkeypatch.setattr(Video, "packet_times", lambda self: real(self)[2:])  # fails at the first segment only
    assert clip_keys(list(sample_clips(path, 1.6, 4))) == clip_keys(every)
