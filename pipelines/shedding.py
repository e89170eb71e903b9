"""Overload shed evenly over the live streams of one process (opt-in: REELFLOW_STREAM_SHED=1).

`Shedding` is shared by a process's `pipelines.live.LiveSource` readers: it watches how far behind
they fall, and sets the share of GOPs (keyframe to keyframe) every stream leaves undecoded. Each
reader's `GopRuns` turns that share into runs of whole GOPs shed, at its keyframes.

    >>> shedding = Shedding(lag_s=1.0)
    >>> source = LiveSource(url, max_lag_s=1.0, shedding=shedding)          # doctest: +SKIP
"""

from __future__ import annotations

import random
import threading
import time

LATE_SKIP = 1.5  # how far over the target a reader that skipped more than most waits
SKIPS_FADE = 0.95  # how much of a reader's skip count is left after a period
FORGET = 120  # periods without a frame from a reader before it is forgotten (a run shed is silent)
SKIPPING = 0.1  # the share of readers skipping to a keyframe in a period that makes it shed more
CALM_PERIODS = 5  # periods of every reader keeping up before it sheds less
ON_RUN_PACKETS = 200  # a stream decodes GOPs for about this many frames (8 s at 25 fps) between runs shed


class Shedding:
    """The share of GOPs the streams of one process leave undecoded, from how far behind they fall.

    Past what the machine can do, readers fall behind, and each one that falls `lag_s` behind
    skips to a keyframe on its own: which ones do is up to the threads' luck, and the first to
    cross the target relieve the rest, so the same few drop most. Shared by the readers of a
    process, this does two things:

    - every `period_s` it looks at how far behind the readers got, raises the share of GOPs
      (keyframe to keyframe) that every stream leaves undecoded while more than SKIPPING of the
      readers skip to a keyframe for being behind in a period, and lowers it slowly once none has
      and all have been within half the target for CALM_PERIODS. Each stream sheds that share of
      its GOPs, in runs (`GopRuns`): after about ON_RUN_PACKETS frames decoded, as many GOPs in a
      row as its credit has reached (`off_run`).
      A run costs the windows at its two ends only; GOPs shed one at a time cost every window they
      cut into, two each where a window is shorter than a GOP, so most of what was decoded;
    - a reader over the target that skipped more than the process's readers on average waits
      (`may_skip`), up to LATE_SKIP times the target, for the others to take their turn.

    Measured with 40 cameras of 640x360 on 2 cores (keyframes every 2 s; benchmarks/streams.md):
    GOPs shed one at a time cost a quarter of the segments. In runs, half to four fifths of what
    is decoded goes into published windows (a third without shedding) and p95 is lower, but
    segments per second were not clearly more, and near capacity (16 cameras) it drops a few
    windows in some runs. A run's windows are counted when it ends. Hence opt-in. (Measured with
    `most` 0.9; now 0.75.)
    """

    def __init__(self, lag_s: float, period_s: float = 1.0, step: float = 0.05, most: float = 0.75):
        # most: runs shed are at most most / (1 - most) times a run decoded: 0.75, 3 times, so a
        # camera with a keyframe every 2 s at 25 fps is dark for at most ~24 s at a time (at 0.9, 72 s)
        if not 0.0 <= most < 1.0:
            raise ValueError(f"most must be in [0, 1) (a share of GOPs shed), got {most}")
        self.lag_s, self.period_s, self.step, self.most = lag_s, period_s, step, most
        self.share = 0.0
        self.lags: dict[int, float] = {}  # reader -> its worst lag this period
        self.calm = 0  # periods in a row with no reader skipping and every one within half the target
        self.skippers: set[int] = set()  # readers that skipped to a keyframe for being behind, this period
        self.skips: dict[int, float] = {}  # reader -> its skips to a keyframe for being behind (fading)
        self.seen: dict[int, int] = {}  # reader -> the last period it read a frame in
        self.period = 0
        self.next_at = time.monotonic() + period_s
        self.lock = threading.Lock()

    def lag(self, reader: object, lag_s: float) -> None:
        """A reader's lag behind its stream, at a frame."""
        key = id(reader)
        if lag_s > self.lags.get(key, -1.0):
            self.lags[key] = lag_s
        self.seen[key] = self.period
        if time.monotonic() >= self.next_at and self.lock.acquire(blocking=False):
            try:
                self._update()
            finally:
                self.lock.release()

    def _update(self) -> None:
        worst = max(dict(self.lags).values(), default=0.0)  # readers' threads add to it meanwhile: a copy
        # Readers skipping to a keyframe for being behind: a few now and then is a machine near
        # what it keeps up with (each skip costs its stream a window or two); many in a period is
        # overload, which shedding in runs spreads evenly and wastes less decoding on.
        skippers, self.skippers = self.skippers, set()  # swapped whole: readers' threads add meanwhile
        skipping = len(skippers) / max(1, len(self.seen))
        if skipping > SKIPPING:  # overloaded: shed more, at once
            self.share = min(self.most, self.share + (2 if skipping > 2.5 * SKIPPING else 1) * self.step)
            self.calm = 0
        elif skipping == 0 and worst < 0.5 * self.lag_s:  # keeping up: shed less, slowly
            self.calm += 1
            if self.calm >= CALM_PERIODS:
                self.share = max(0.0, self.share - self.step / 5)
        else:  # in between: hold
            self.calm = 0
        # readers not heard of for a while (streams stopped) are forgotten; the skips of the rest fade
        self.period += 1
        self.seen = {k: v for k, v in dict(self.seen).items() if v >= self.period - FORGET}
        self.skips = {k: v * SKIPS_FADE for k, v in dict(self.skips).items() if k in self.seen}
        self.lags = {}
        self.next_at = time.monotonic() + self.period_s

    def may_skip(self, reader: object, lag_s: float) -> bool:
        """Whether a reader `lag_s` behind (over the target) skips to a keyframe now (and counts it).

        When the machine runs short, every reader falls behind at once, and those that cross the
        target first skip and relieve the rest: the same few every time. So a reader that skipped
        more than the process's readers on average waits, up to LATE_SKIP times the target."""
        key = id(reader)
        mine = self.skips.get(key, 0.0)
        readers = list(self.seen)  # the average is over every reader, those that never skipped too
        average = sum(self.skips.get(k, 0.0) for k in readers) / max(1, len(readers))
        if lag_s <= LATE_SKIP * self.lag_s and mine > average:
            return False
        self.skips[key] = mine + 1.0
        self.skippers.add(key)
        return True

    def off_run(self, on_gops: int, credit: float) -> tuple[int, float]:
        """After a stream decoded `on_gops` GOPs in a row, with its credit: how many GOPs it leaves
        undecoded now, in a row (0: it decodes on), and its new credit. Over time every stream sheds
        the current share of its GOPs."""
        share = min(self.share, self.most)
        credit += on_gops * share / (1.0 - share)
        run = int(credit)
        return run, credit - run


class GopRuns:
    """One reader's runs of GOPs shed, under the share its process's `Shedding` sets.

    GOPs are shed in runs, between runs of about ON_RUN_PACKETS frames decoded. A run shed costs
    the windows at its two ends, where GOPs shed one at a time would cost every window they cut
    into: two each where a window is shorter than a GOP, most of what was decoded."""

    def __init__(self, shedding: Shedding):
        self.shedding = shedding
        self.credit = random.random()  # towards the next GOP shed: streams started together shed apart
        self.on: int | None = None  # GOPs decoded since the last run shed
        self.off = 0  # GOPs left to shed in this run

    def shed(self, gop: int) -> bool:
        """At a keyframe, after a GOP of `gop` packets: whether the GOP starting here is left undecoded."""
        on_gops = max(1, round(ON_RUN_PACKETS / gop))
        if self.on is None:  # streams started together start their runs apart
            self.on = random.randrange(on_gops)
        if self.off == 0 and self.on >= on_gops:
            self.off, self.credit = self.shedding.off_run(on_gops, self.credit)
            self.on = 0
        if self.off > 0:
            self.off -= 1
            return True
        self.on += 1
        return False
