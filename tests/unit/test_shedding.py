"""Overload shed evenly over a process's streams (pipelines.shedding.Shedding): its rules, and real
readers leaving whole GOPs undecoded."""

from __future__ import annotations

import threading

import pytest

from pipelines import shedding as shedding_rules
from pipelines.live import LiveSource, live_windows
from pipelines.shedding import CALM_PERIODS, FORGET, LATE_SKIP, Shedding
from pipelines.synthetic import make_video


def test_every_stream_sheds_the_share_of_its_gops_in_runs_whatever_its_credit():
    shedding = Shedding(lag_s=1.0)
    shedding.share = 0.25
    for credit in (0.0, 0.3, 0.99):
        decoded = shed = 0
        runs = []
        while decoded + shed < 400:  # GOPs
            decoded += 4  # a run of 4 decoded, then a run shed
            run, credit = shedding.off_run(4, credit)
            shed += run
            runs.append(run)
        assert abs(shed / (decoded + shed) - 0.25) < 0.01
        assert set(runs) == {1, 2}  # 4 * 0.25 / 0.75 = 1.33 GOPs after every 4
    shedding.share = 0.0
    assert shedding.off_run(4, 0.5) == (0, 0.5)  # no overload: nothing shed


def test_the_share_rises_while_many_readers_skip_and_falls_slowly_once_all_keep_up():
    shedding = Shedding(lag_s=1.0, period_s=3600.0)  # periods end when the test says
    readers = [object() for _ in range(20)]

    def period(lag_s: float, skipping: int) -> None:
        for reader in readers:
            shedding.lag(reader, lag_s)
        for reader in readers[:skipping]:
            assert shedding.may_skip(reader, 1.6)  # over LATE_SKIP targets: always goes
        shedding._update()

    period(0.9, 2)  # a few readers skipping (a tenth): a machine near its capacity, not overload
    assert shedding.share == 0.0
    period(0.9, 3)  # more than a tenth: shed more
    assert shedding.share == 0.05
    period(1.2, 6)  # more than a quarter: twice as much more
    assert round(shedding.share, 6) == 0.15
    period(0.6, 0)  # none skipping, but a reader still over half the target: hold
    assert round(shedding.share, 6) == 0.15
    for _ in range(CALM_PERIODS - 1):  # keeping up, not for long enough yet
        period(0.1, 0)
    assert round(shedding.share, 6) == 0.15
    period(0.1, 0)
    assert round(shedding.share, 6) == 0.14  # a fifth of a step
    shedding.share = shedding.most
    period(5.0, 20)
    assert shedding.share == shedding.most == 0.75  # never all of it: a camera dark 3 runs decoded at most
    assert shedding.off_run(4, 0.0) == (12, 0.0)


def test_a_reader_that_skipped_more_than_most_waits_for_the_others_up_to_its_limit():
    shedding = Shedding(lag_s=1.0)
    a, b, c = object(), object(), object()
    for reader in (a, b, c):
        shedding.lag(reader, 0.0)
    assert shedding.may_skip(a, 1.1)  # nobody skipped yet: a goes
    assert not shedding.may_skip(a, 1.1)  # a skipped more than most: its turn waits
    assert shedding.may_skip(b, 1.1) and shedding.may_skip(c, 1.1)  # the others go
    assert shedding.may_skip(a, 1.1)  # now a is no more than average
    assert not shedding.may_skip(a, 1.2)
    assert shedding.may_skip(a, LATE_SKIP * 1.0 + 0.01)  # but never waits past LATE_SKIP targets


def test_readers_forget_streams_gone_and_the_skips_fade():
    shedding = Shedding(lag_s=1.0, period_s=0.0)
    gone, here = object(), object()
    shedding.lag(gone, 0.0)
    assert shedding.may_skip(gone, 1.1)
    for _ in range(10):  # `gone` reads no more frames: remembered for a while (a run shed is silent)
        shedding.lag(here, 0.0)
    assert id(gone) in shedding.seen and 0 < shedding.skips[id(gone)] < 1  # its skip fading
    for _ in range(FORGET - 10):  # then forgotten, after FORGET periods
        shedding.lag(here, 0.0)
    assert id(gone) not in shedding.skips and id(gone) not in shedding.seen and id(here) in shedding.seen


def _play(source: LiveSource, until_s: float) -> tuple[list, list]:
    """The frames a source gave up to stream time `until_s`, and the 0.4 s windows published from them."""
    stop, seen = threading.Event(), []

    def frames():
        for live_frame in source.frames(stop):
            seen.append(live_frame)
            if live_frame.time_s > until_s:
                stop.set()
            yield live_frame

    return seen, list(live_windows(frames(), clip_s=0.4, num_frames=4))


@pytest.mark.parametrize("bframes", [False, True])  # B-frames: the decoder gives frames held back after the skip
def test_a_reader_sheds_a_run_of_whole_gops_and_only_the_windows_it_cut_are_dropped(video_dir, monkeypatch, bframes):
    path = video_dir / f"live_shed_gop10_b{int(bframes)}.mp4"
    make_video(path, seconds=5.2, fps=25, size=(160, 120), bframes=bframes, gop=10)  # a keyframe every 0.4 s
    monkeypatch.setattr(shedding_rules, "ON_RUN_PACKETS", 40)  # runs of 4 GOPs decoded (a short video)
    shedding = Shedding(lag_s=1.0, step=0.0)  # the share stays where it is set
    shedding.share = 0.5
    source = LiveSource(str(path), shedding=shedding)
    # GOPs 0-4 decoded (the first is not counted), 5-8 shed, 9- decoded
    source.gop_runs.on, source.gop_runs.credit = 0, 0.0
    seen, clips = _play(source, until_s=5.0)
    assert source.stats.shed == 4 and source.stats.skipped == 40  # whole GOPs, read and not decoded
    assert not any(2.0 <= f.time_s < 3.6 for f in seen)
    [resumed] = [f for f in seen if f.resumed]
    assert round(resumed.time_s, 2) == 3.6 and round(resumed.skipped_from, 2) == 2.0
    # only whole windows are published: window 4 [1.6, 2.0) too, which ended where the run began
    assert [c.index for c in clips] == [0, 1, 2, 3, 4, 9, 10, 11]
    counts = [c.frame_count for c in clips]  # a frame on a boundary can fall either side (float times)
    assert set(counts) <= {9, 10, 11}, counts
    assert [c.skipped_before for c in clips if c.skipped_before] == [4]  # windows 5-8, counted


def test_a_run_that_a_looping_file_ends_in_goes_on_and_its_windows_are_counted(video_dir, monkeypatch):
    path = video_dir / "live_shed_loop.mp4"
    make_video(path, seconds=2.4, fps=25, size=(160, 120), bframes=False, gop=10)  # 6 GOPs of 0.4 s
    monkeypatch.setattr(shedding_rules, "ON_RUN_PACKETS", 40)  # runs of 4 GOPs decoded
    shedding = Shedding(lag_s=1.0, step=0.0)
    shedding.share = 0.5
    source = LiveSource(str(path), shedding=shedding)
    # 0-2.0 s decoded; a run of 4 GOPs from 2.0 s, past the file's end
    source.gop_runs.on, source.gop_runs.credit = 0, 0.0
    seen, clips = _play(source, until_s=4.7)
    # the file's second play (from ~2.36 s: a looping file starts again as soon as its last frame is
    # in, a frame early): its first GOP decoded (a new connection decides nothing at its first
    # keyframe), that frame marked as after the skip that began at 2.0 s; then the run's 3 GOPs left
    resumed = [f for f in seen if f.resumed]
    assert len(resumed) == 2 and round(resumed[0].skipped_from, 2) == 2.0
    # (the second play starts when the file has been opened again: stream time goes on as the wall
    # clock did, some milliseconds; 54 ms in a CI run)
    assert 2.3 < resumed[0].time_s < 2.5 and 1.19 < resumed[1].time_s - resumed[1].skipped_from < 1.21
    # window 6 [2.4, 2.8) lacks its last frame (the file's play was a frame short): dropped too
    assert [c.index for c in clips] == [0, 1, 2, 3, 4, 10]
    assert [c.skipped_before for c in clips if c.skipped_before] == [5]  # windows 5-9, counted


def test_a_reader_skipping_many_times_in_a_period_counts_once():
    shedding = Shedding(lag_s=1.0, period_s=3600.0)
    readers = [object() for _ in range(10)]
    for reader in readers:
        shedding.lag(reader, 0.0)
    for _ in range(5):  # an all-intra stream behind skips at every frame
        assert shedding.may_skip(readers[0], 1.6)
    shedding._update()
    assert shedding.share == 0.0  # one reader of ten: not over SKIPPING
