"""Overload shed evenly over a process's streams (pipelines.live.Shedding): its rules, and real
readers leaving whole GOPs undecoded."""

from __future__ import annotations

import threading

from pipelines.live import CALM_PERIODS, LATE_SKIP, LiveSource, Shedding, live_windows
from pipelines.synthetic import make_video


def test_every_stream_sheds_the_same_share_of_its_gops_whatever_its_credit():
    shedding = Shedding(lag_s=1.0)
    shedding.share = 0.25
    for credit in (0.0, 0.3, 0.99):
        shed = 0
        for _ in range(40):  # keyframes
            gone, credit = shedding.shed(credit)
            shed += gone
        assert shed in (10, 11)


def test_the_share_rises_while_a_reader_falls_behind_and_falls_slowly_once_all_keep_up():
    shedding = Shedding(lag_s=1.0, period_s=0.0)  # a period ends at every frame
    a, b = object(), object()
    shedding.lag(b, 0.0)
    shedding.lag(a, 0.6)  # over half the target: shed more
    assert shedding.share == 0.05
    shedding.lag(a, 1.2)  # over the target: twice as much more
    assert round(shedding.share, 6) == 0.15
    shedding.lag(a, 0.4)  # between a quarter and half: hold
    assert round(shedding.share, 6) == 0.15
    for _ in range(CALM_PERIODS - 1):  # keeping up, not for long enough yet
        shedding.lag(a, 0.1)
    assert round(shedding.share, 6) == 0.15
    shedding.lag(a, 0.1)
    assert round(shedding.share, 6) == 0.14  # a fifth of a step
    shedding.share = 0.9
    shedding.lag(a, 5.0)
    assert shedding.share == 0.9  # never all of it


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
    for _ in range(10):  # `gone` reads no more frames: remembered for a while (a shed GOP is silent)
        shedding.lag(here, 0.0)
    assert id(gone) in shedding.seen and 0 < shedding.skips[id(gone)] < 1  # its skip fading
    for _ in range(30):  # then forgotten, after FORGET periods
        shedding.lag(here, 0.0)
    assert id(gone) not in shedding.skips and id(gone) not in shedding.seen and id(here) in shedding.seen


def test_a_reader_sheds_whole_gops_and_the_windows_they_cut_are_dropped_and_counted(video_dir):
    path = video_dir / "live_shed_gop10.mp4"
    make_video(path, seconds=4.0, fps=25, size=(160, 120), bframes=False, gop=10)  # a keyframe every 0.4 s
    shedding = Shedding(lag_s=1.0, step=0.0)  # the share stays where it is set
    shedding.share = 0.5
    source, stop = LiveSource(str(path), shedding=shedding), threading.Event()
    source._credit = 0.0  # GOPs 2, 4, 6 and 8 (of 0-9) are shed: every other one once the first is over
    seen = []

    def frames():
        for live in source.frames(stop):
            seen.append(live)
            if live.time_s > 3.9:
                stop.set()
            yield live

    clips = list(live_windows(frames(), clip_s=0.3, num_frames=4))
    assert source.stats.shed == 4 and source.stats.skipped == 40  # whole GOPs, read and not decoded
    shed = [(0.8, 1.2), (1.6, 2.0), (2.4, 2.8), (3.2, 3.6)]
    assert not any(a <= f.time_s < b for f in seen for a, b in shed)
    assert len([f for f in seen if f.time_s < 3.9]) == 98 - 40
    assert [round(f.time_s, 2) for f in seen if f.resumed] == [1.2, 2.0, 2.8, 3.6]  # the frame after each
    # only whole windows are published; those the shed GOPs cut into are dropped and counted
    assert all(c.frame_count in (7, 8) for c in clips)
    assert not any(a < c.end_s and c.start_s < b for c in clips for a, b in shed)
    # windows 2-3, 5-6, 7-9 and 10-11 cut (7 [2.1, 2.4) has its frames, but a skip could have begun inside
    # it: live_windows cannot tell, and drops it)
    assert [c.index for c in clips] == [0, 1, 4, 12]
    assert sum(c.skipped_before for c in clips) == 2 + 2 + 3 + 2
