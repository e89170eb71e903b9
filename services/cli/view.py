"""`reelflow report` and `reelflow annotate`: what people look at, from a results file or a job.

    $ reelflow classify video.mp4 --json --embeddings > segments.jsonl
    $ reelflow report segments.jsonl --video video.mp4 -o report.html
    $ reelflow annotate video.mp4 segments.jsonl -o annotated.mp4

plotly and PyAV are imported inside the commands, so `reelflow --help` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipelines.errors import ReelflowError


def run_report(args) -> int:
    from services.report import render_report
    from services.report.segments import load_results

    results = load_results(args.results, home=args.home)
    if args.video:
        try:
            _check_video_length(args.video, results.segments[-1].end_s)
        except ReelflowError as e:
            raise ReelflowError(f"--video: {e}") from None
    html = render_report(results, video=args.video)
    output = Path(args.output)
    try:
        output.write_text(html, encoding="utf-8")
    except OSError as e:
        raise ReelflowError(f"cannot write {args.output!r} ({e.strerror or e})") from None
    print(f"wrote {output} ({len(results.segments)} segments, {len(html) / 1e6:.1f} MB, self-contained: "
          "opens offline)", file=sys.stderr)
    return 0


def run_annotate(args) -> int:
    from pipelines.annotate import annotate_video
    from services.report.segments import load_results

    output = args.output or f"{Path(args.video).stem}-annotated.mp4"
    if Path(output).resolve() == Path(args.video).resolve():
        raise ReelflowError(f"-o {output!r} is the video itself; write the annotated video elsewhere")
    results = load_results(args.results, home=args.home)
    _check_video_length(args.video, results.segments[-1].end_s)
    bar = ProgressBar("annotating") if sys.stderr.isatty() else None
    stats = annotate_video(args.video, results.segments, output, progress=bar)
    if bar is not None:
        bar.close()
    print(f"wrote {output} ({stats.frames} frames, {stats.width}x{stats.height}, H.264)", file=sys.stderr)
    return 0


def _check_video_length(video: str, results_end_s: float) -> None:
    """Warn when the video and the results disagree on the length: probably not the same video."""
    from pipelines.decode import open_video

    with open_video(video) as v:
        duration = v.duration_s()
    if abs(duration - results_end_s) > max(1.0, 0.05 * duration):
        print(f"reelflow: warning: {video} is {duration:.1f} s but the results end at {results_end_s:.1f} s; "
              "are they of this video?", file=sys.stderr)


class ProgressBar:
    """A one-line progress bar on stderr (a terminal): `bar(done, total)`, then `bar.close()`."""

    WIDTH = 30

    def __init__(self, what: str):
        self.what, self.started = what, time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        if total:
            fill = min(self.WIDTH, int(self.WIDTH * done / total))
            eta = f", ETA {(total - done) / rate:.0f} s" if rate and done < total else ""
            line = f"[{'#' * fill}{'.' * (self.WIDTH - fill)}] {done}/{total} frames{eta}"
        else:
            line = f"{done} frames"
        print(f"\r\033[K{self.what} {line} ({rate:.0f} fps)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
