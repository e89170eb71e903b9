"""Live sources and windows, smoothing and events: a file played as a camera, real time, real decoding."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from pipelines.decode_slots import DecodeSlots
from pipelines.live import LiveFrame, LiveSource, live_windows, window_phase
from pipelines.smoothing import LabelEvents, Smoother
from pipelines.synthetic import make_video
from support.raw_streams import raw_copy


@pytest.fixture(scope="module")
def two_seconds(video_dir):
    path = video_dir / "live_two_seconds.mp4"
    make_video(path, seconds=2.0, fps=25, size=(160, 120))
    return path


def collect(source: LiveSource, seconds: float, clip_s=0.8, num_frames=4, stride_s=None):
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        return list(live_windows(source.frames(stop), clip_s, num_frames, stride_s))
    finally:
        timer.cancel()


def test_a_file_plays_in_real_time_and_loops_with_continuous_stream_time(two_seconds):
    source = LiveSource(str(two_seconds))
    started = time.time()
    clips = collect(source, 4.6)
    assert [c.index for c in clips] == list(range(len(clips))) and 4 <= len(clips) <= 5
    assert [c.start_s for c in clips[:4]] == [0.0, 0.8, 1.6, 2.4]  # window 2 spans the loop
    assert all(c.frames.shape == (4, 120, 160, 3) and c.frames.dtype == np.uint8 for c in clips)
    assert all(19 <= c.frame_count <= 21 for c in clips)  # 0.8 s at 25 fps, across the loop too
    for clip in clips:  # paced: a window is captured about when its end comes round on the wall clock
        assert clip.captured_at - started == pytest.approx(clip.end_s, abs=0.5)
    assert source.stats.reconnects == 0 and source.stats.gaps == 0 and source.stats.connects >= 2


def test_a_raw_h264_file_without_timestamps_plays_in_real_time_at_its_frame_rate(two_seconds, tmp_path):
    raw = raw_copy(two_seconds, tmp_path / "camera.h264", "h264")
    source = LiveSource(str(raw))
    started = time.time()
    clips = collect(source, 3.0)
    assert [c.start_s for c in clips] == [0.0, 0.8, 1.6][:len(clips)] and len(clips) >= 2
    assert all(19 <= c.frame_count <= 21 for c in clips)  # 0.8 s at 25 fps
    for clip in clips:
        assert clip.captured_at - started == pytest.approx(clip.end_s, abs=0.5)


def test_stride_overlaps_windows(two_seconds):
    clips = collect(LiveSource(str(two_seconds)), 2.6, clip_s=1.0, stride_s=0.5)
    assert [(c.start_s, c.end_s) for c in clips[:3]] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]


def test_an_unreachable_source_backs_off_and_counts_without_raising():
    source = LiveSource("rtsp://127.0.0.1:9/nothing", open_timeout_s=0.5, backoff_s=0.1, max_backoff_s=0.4)
    started = time.monotonic()
    assert collect(source, 2.0) == []
    assert time.monotonic() - started < 4  # stop is honoured between attempts
    assert source.stats.gaps >= 2 and source.stats.reconnects >= 1 and source.stats.state == "stopped"
    assert source.stats.last_error


def test_a_gap_in_stream_time_skips_the_empty_windows_and_never_reuses_an_index():
    times = [0.0, 0.3, 0.6, 0.9, 1.2, 5.0, 5.3, 5.6, 6.0, 6.5]
    frames = (LiveFrame(t, av.VideoFrame(2, 2, "yuv420p"), 1000 + t) for t in times)
    clips = list(live_windows(frames, clip_s=1.0, num_frames=2))
    assert [(c.index, c.frame_count) for c in clips] == [(0, 4), (1, 1), (5, 3)]
    assert clips[-1].captured_at == 1000 + 5.6


def test_the_window_a_reconnect_cut_short_is_marked_cut():
    """The camera went away at 1.2 s and came back at 5.0 s (a reconnect): window 1 closes with the
    frame it has when the stream returns, marked `cut` (the stream runner gives it a fresh deadline)."""
    times = [0.0, 0.3, 0.6, 0.9, 1.2, 5.0, 5.3, 5.6, 6.0, 6.5]
    frames = (LiveFrame(t, av.VideoFrame(2, 2, "yuv420p"), 1000 + t, after_gap=t == 5.0) for t in times)
    clips = list(live_windows(frames, clip_s=1.0, num_frames=2))
    assert [(c.index, c.frame_count, c.cut) for c in clips] == [(0, 4, False), (1, 1, True), (5, 3, False)]
    assert clips[1].captured_at == 1000 + 1.2  # when its last frame came


def test_windows_start_at_the_streams_phase_and_gaps_keep_to_its_grid():
    times = [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 5.0, 5.3, 5.6, 6.0, 6.5]
    frames = (LiveFrame(t, av.VideoFrame(2, 2, "yuv420p"), 1000 + t) for t in times)
    clips = list(live_windows(frames, clip_s=1.0, num_frames=2, offset_s=0.25))
    # frames before the phase belong to no window; after the gap, windows keep the 0.25 + i grid
    assert [(c.index, c.start_s, c.end_s, c.frame_count) for c in clips] == \
        [(0, 0.25, 1.25, 4), (1, 1.25, 2.25, 2), (4, 4.25, 5.25, 1), (5, 5.25, 6.25, 3)]


def test_window_phases_are_stable_per_name_and_spread_over_the_stride():
    phases = [window_phase(f"cam{i}", 1.6) for i in range(40)]
    assert phases == [window_phase(f"cam{i}", 1.6) for i in range(40)]  # after a restart, anywhere
    assert all(0 <= p < 1.6 for p in phases)
    # 40 cameras started together: no tenth of the stride holds more than a quarter of their windows' ends
    assert max(sum(k * 0.16 <= p < (k + 1) * 0.16 for p in phases) for k in range(10)) <= 10


def test_a_skip_to_the_next_keyframe_decodes_nothing_before_it_and_drops_the_windows_it_cut(video_dir):
    gop = 20  # a keyframe every 0.8 s at 25 fps
    path = video_dir / "live_gop20.mp4"
    make_video(path, seconds=4.0, fps=25, size=(160, 120), bframes=False, gop=gop)
    source, stop = LiveSource(str(path)), threading.Event()
    seen: list[LiveFrame] = []

    def frames():
        for live in source.frames(stop):
            seen.append(live)
            if len(seen) == 30:  # 1.2 s in, inside window 1 (and a GOP that began at 0.8 s)
                source.skip_to_keyframe()
            if live.time_s > 3.9:
                stop.set()
            yield live

    clips = list(live_windows(frames(), clip_s=0.5, num_frames=4))
    resumed = [f for f in seen if f.resumed]
    assert len(resumed) == 1 and resumed[0].time_s == pytest.approx(1.6, abs=0.01)  # the next keyframe
    assert source.stats.skipped == 10  # frames 30..39 read, not decoded
    assert not any(1.2 <= f.time_s < 1.6 for f in seen)
    # window 2 [1.0, 1.5) lost frames to the skip: dropped and counted; window 3 [1.5, 2.0) too
    assert [c.index for c in clips][:4] == [0, 1, 4, 5] and clips[2].skipped_before == 2
    assert all(c.frame_count in (12, 13) for c in clips)  # every window published is whole
    assert sum(c.skipped_before for c in clips) == 2


def test_windows_a_skip_cut_into_are_counted_when_the_skip_ends_not_with_a_later_window(video_dir):
    """A reader that skips again and again may close no window for a long while: given `on_skipped`,
    the windows a skip cut into are counted at the frame that ends it (the stream's `dropped`)."""
    path = video_dir / "live_gop20.mp4"
    make_video(path, seconds=4.0, fps=25, size=(160, 120), bframes=False, gop=20)
    source, stop = LiveSource(str(path)), threading.Event()
    seen: list[LiveFrame] = []
    counted: list[tuple[int, int]] = []  # (windows, frames seen when counted)

    def frames():
        for live in source.frames(stop):
            seen.append(live)
            if len(seen) == 30:  # inside window 2 [1.0, 1.5): the skip runs to the keyframe at 1.6 s
                source.skip_to_keyframe()
            if live.time_s > 3.9:
                stop.set()
            yield live

    clips = list(live_windows(frames(), clip_s=0.5, num_frames=4,
                              on_skipped=lambda n: counted.append((n, len(seen)))))
    resumed_at = next(i for i, f in enumerate(seen) if f.resumed) + 1
    assert counted == [(2, resumed_at)]  # windows 2 and 3, at the keyframe that ended the skip
    assert [c.index for c in clips][:4] == [0, 1, 4, 5] and not any(c.skipped_before for c in clips)


def test_a_reader_that_falls_behind_skips_to_a_keyframe_and_its_lag_counts_in_the_capture_time(video_dir):
    path = video_dir / "live_gop10.mp4"
    make_video(path, seconds=4.0, fps=25, size=(160, 120), bframes=False, gop=10)
    for max_lag_s in (None, 0.3):
        source, stop = LiveSource(str(path), max_lag_s=max_lag_s), threading.Event()
        seen, started = [], time.time()
        for live in source.frames(stop):
            seen.append(live)
            if len(seen) <= 15:
                time.sleep(0.08)  # a reader at half the frame rate, for a while
            if live.time_s > 2.5:
                break
        stop.set()
        if max_lag_s is None:  # it reads every frame, late
            assert source.stats.behind == 0 and source.stats.skipped == 0 and not any(f.resumed for f in seen)
            assert len(seen) >= 63
        else:  # it skips to a keyframe (every 0.4 s) once 0.3 s behind, and catches up
            assert source.stats.behind >= 1 and source.stats.skipped >= 1 and any(f.resumed for f in seen)
            assert len(seen) < 63
        # arrival: when a prompt reader would have had the frame, about its stream time on the wall clock
        assert seen[10].arrived_at - started == pytest.approx(seen[10].time_s, abs=0.15)


def test_readers_sharing_one_decode_slot_all_go_on(two_seconds):
    slots, stop = DecodeSlots(1), threading.Event()
    sources = [LiveSource(str(two_seconds), decode_slots=slots) for _ in range(3)]
    threads = [threading.Thread(target=lambda s=s: [None for _ in s.frames(stop)]) for s in sources]
    for t in threads:
        t.start()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    assert all(s.stats.frames >= 50 for s in sources), [s.stats.frames for s in sources]  # ~25 fps each
    assert slots.free == 1  # given back by every reader


def test_smoothing_averages_the_last_k_segments():
    smoother = Smoother(k=2)
    smoother.add(np.array([1.0, 0.0]))
    np.testing.assert_allclose(smoother.add(np.array([0.0, 1.0])), [0.5, 0.5])
    np.testing.assert_allclose(smoother.add(np.array([0.0, 1.0])), [0.0, 1.0])
    with pytest.raises(ValueError):
        Smoother(k=0)


def test_label_events_have_hysteresis():
    events = LabelEvents(enter=0.6, exit=0.4)
    seen = [events.update(np.array(s), i) for i, s in enumerate([[0.5, 0.5], [0.7, 0.3], [0.5, 0.5], [0.3, 0.7]])]
    assert seen[0] == []  # nothing above the entry threshold
    assert [e["event"] for e in seen[1]] == ["enter"] and seen[1][0]["label"] == 0
    assert seen[2] == []  # 0.5: below entry but above exit -> label 0 stays current (no flicker)
    assert [(e["event"], e["label"]) for e in seen[3]] == [("exit", 0), ("enter", 1)]
    with pytest.raises(ValueError):
        LabelEvents(enter=0.3, exit=0.6)


def _keyed_video(path, keys: set[int], frames: int, fps: int = 24, size=(160, 120)) -> None:
    """H.264 without B-frames whose keyframes are exactly the frames `keys`."""
    from fractions import Fraction

    from pipelines.synthetic import frame_image

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0", "g": "10000", "sc_threshold": "0", "forced-idr": "1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, *size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            if i in keys:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _windows_until(source: LiveSource, until_s: float, **kwargs) -> list:
    stop = threading.Event()

    def frames():
        for live in source.frames(stop):
            if live.time_s > until_s:
                stop.set()
            yield live

    return list(live_windows(frames(), num_frames=4, on_next=source.wanted_from, **kwargs))


def test_gops_between_sparse_windows_are_not_decoded_and_every_window_is_whole(video_dir):
    path = video_dir / "live_gop6_24fps.mp4"
    _keyed_video(path, set(range(0, 120, 6)), 120)  # a keyframe every 0.25 s, 5 s
    source = LiveSource(str(path))
    clips = _windows_until(source, 4.0, clip_s=0.4, stride_s=1.25)  # windows [0, 0.4), [1.25, 1.65), ...
    assert [c.index for c in clips][:3] == [0, 1, 2]
    assert all(c.frame_count in (9, 10) and c.skipped_before == 0 for c in clips)  # every window whole
    assert source.stats.skipped == 0 and source.stats.unwanted >= 30, source.stats  # 3 x 0.85 s between windows
    assert source.stats.frames + source.stats.unwanted >= 96  # every frame read, in real time


def test_a_gop_longer_than_the_last_ones_that_cost_a_window_frames_drops_it_as_skipped(video_dir):
    path = video_dir / "live_gop_stretched.mp4"
    keys = {0, 6, 12, 18, 24, 30} | set(range(48, 120, 6))  # every 0.25 s, but none from 1.25 s to 2.0 s
    _keyed_video(path, keys, 120)
    source = LiveSource(str(path))
    clips = _windows_until(source, 4.0, clip_s=0.4, stride_s=1.75)  # windows [0, 0.4), [1.75, 2.15), [3.5, 3.9)
    # the GOP from 1.25 s was left undecoded (the next keyframe was due by 1.5 s) and ran to 2.0 s:
    # window 1 lost its first frames, so it is dropped and counted; windows 0 and 2 are whole
    assert [c.index for c in clips][:2] == [0, 2] and clips[1].skipped_before == 1
    assert all(c.frame_count in (9, 10) for c in clips)
    assert source.stats.unwanted >= 30
