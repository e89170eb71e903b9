"""The segment rule of DESIGN.md, as a table."""

from fractions import Fraction

import pytest

from pipelines.segments import Segment, plan_segments, pts_bounds


@pytest.mark.parametrize(
    "duration, clip, stride, expected",
    [
        # 10 s with x3d_xs (1.6 s clips): six full segments and a tail ending at 10.0
        (10.0, 1.6, None, [(0.0, 1.6), (1.6, 3.2), (3.2, 4.8), (4.8, 6.4), (6.4, 8.0), (8.0, 9.6), (8.4, 10.0)]),
        # exact multiple: no tail
        (3.2, 1.6, None, [(0.0, 1.6), (1.6, 3.2)]),
        # shorter than a clip: one segment covering the video
        (1.0, 1.6, None, [(0.0, 1.0)]),
        (1.6, 1.6, None, [(0.0, 1.6)]),
        # overlapping stride
        (3.0, 2.0, 0.5, [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0)]),
        (3.1, 2.0, 0.5, [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0), (1.1, 3.1)]),
        # stride longer than a clip leaves gaps; the tail still ends at the video's end
        (10.0, 1.6, 5.0, [(0.0, 1.6), (5.0, 6.6), (8.4, 10.0)]),
        # clip lengths that are not round: 64/30 s
        (5.28, 64 / 30, None, [(0.0, 2.133333), (2.133333, 4.266667), (3.146667, 5.28)]),
    ],
)
def test_plan_segments(duration, clip, stride, expected):
    segments = plan_segments(duration, clip, stride)
    assert [(s.start_s, s.end_s) for s in segments] == expected
    assert [s.index for s in segments] == list(range(len(expected)))


def test_no_tail_when_the_last_full_segment_reaches_the_end():
    segments = plan_segments(1.7, 1.6, 0.05)
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 1.6), (0.05, 1.65), (0.1, 1.7)]


@pytest.mark.parametrize("clip, stride", [(0, None), (1.6, 0), (1.6, -1)])
def test_plan_segments_rejects_non_positive_lengths(clip, stride):
    with pytest.raises(ValueError):
        plan_segments(10.0, clip, stride)


@pytest.mark.parametrize(
    "start, end, time_base, start_pts, expected",
    [
        # 30 fps in 1/30: frame 48 is at exactly 1.6 s and belongs to the next segment
        (0.0, 1.6, Fraction(1, 30), 0, (0, 48)),
        (1.6, 3.2, Fraction(1, 30), 0, (48, 96)),
        # a stream starting at pts 1000: times are relative to the first frame
        (1.6, 3.2, Fraction(1, 30), 1000, (1048, 1096)),
        # mp4-style 1/15360 time base
        (0.0, 2.133333, Fraction(1, 15360), 0, (0, 32768)),
    ],
)
def test_pts_bounds(start, end, time_base, start_pts, expected):
    assert pts_bounds(Segment(0, start, end), time_base, start_pts) == expected
