"""`reelflow report` and `reelflow annotate`: what people look at, from a results file or a job.

    $ reelflow classify video.mp4 --json --embeddings > segments.jsonl
    $ reelflow report segments.jsonl --video video.mp4 -o report.html
    $ reelflow annotate video.mp4 segments.jsonl -o annotated.mp4

plotly, numpy and PyAV are imported inside the commands, so `reelflow --help` stays fast. Neither
replaces an existing file without --overwrite, and neither leaves half a file behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.errors import ReelflowError
from pipelines.progress import Bar
from services.cli.options import add_overwrite_option
from services.cli.output import check_output, output_file


def add_commands(commands, home) -> None:
    results_help = ("a job id of the running stack, or a JSON-lines file of segment results "
                    "(`reelflow classify VIDEO --json --embeddings`, `reelflow results JOB`)")
    report = commands.add_parser("report", parents=[home], help="an HTML report of a video's segments",
                                 description="Write one self-contained HTML file (it opens offline): the top label "
                                             "per segment over time, the top classes' scores, which parts of the "
                                             "video look alike (embedding similarity), labels by total time.")
    report.add_argument("results", metavar="JOB_OR_JSONL", help=results_help)
    report.add_argument("--video", metavar="PATH", help="the video the results are of: a thumbnail per segment")
    report.add_argument("-o", "--output", default="report.html", metavar="FILE", help="default report.html")
    add_overwrite_option(report)
    report.set_defaults(run=run_report)

    annotate = commands.add_parser("annotate", parents=[home], help="draw each segment's top labels on the video",
                                   description="Write the video (H.264 MP4, same frames, frame rate and timestamps) "
                                               "with the current segment's top labels and scores on every frame.")
    annotate.add_argument("video", metavar="VIDEO")
    annotate.add_argument("results", metavar="JOB_OR_JSONL", help=results_help)
    annotate.add_argument("-o", "--output", metavar="FILE", help="default: VIDEO's name + -annotated.mp4, here")
    add_overwrite_option(annotate)
    annotate.set_defaults(run=run_annotate)


def run_report(args) -> int:
    from services.report import render_report  # plotly and numpy load here
    from services.report.segments import load_results  # numpy

    check_output(args.output, args.overwrite)  # before any work
    results = load_results(args.results, home=args.home)
    if args.video:
        try:
            _check_video_length(args.video, results.segments[-1].end_s)
        except ReelflowError as e:
            raise ReelflowError(f"--video: {e}") from None
    html = render_report(results, video=args.video, index=_index_for_report(args.home))
    with output_file(args.output, overwrite=args.overwrite) as f:
        f.write(html)
    print(f"wrote {args.output} ({len(results.segments)} segments, {len(html) / 1e6:.1f} MB, self-contained: "
          "opens offline)", file=sys.stderr)
    return 0


def _index_for_report(home: str | None):
    """The stack's vector index, for the report's "similar moments elsewhere" (None: there is none here)."""
    from services.index.vectors import VectorIndex
    from services.settings import settings_for

    location = settings_for(home).index_location
    return VectorIndex(location) if "://" in location or Path(location).is_dir() else None


def run_annotate(args) -> int:
    from pipelines.annotate import annotate_video  # PyAV and Pillow load here
    from services.report.segments import load_results  # numpy

    output = args.output or f"{Path(args.video).stem}-annotated.mp4"
    if Path(output).resolve() == Path(args.video).resolve():
        raise ReelflowError(f"-o {output!r} is the video itself; write the annotated video elsewhere")
    check_output(output, args.overwrite)  # before any work
    results = load_results(args.results, home=args.home)
    _check_video_length(args.video, results.segments[-1].end_s)
    part = Path(output).with_name(f".{Path(output).stem}.part{Path(output).suffix}")  # the muxer goes by the suffix
    try:
        with Bar("annotating", unit="frame") as bar:
            stats = annotate_video(args.video, results.segments, part, progress=lambda done, total: bar.set(done, total))
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)
    print(f"wrote {output} ({stats.frames} frames, {stats.width}x{stats.height}, H.264)", file=sys.stderr)
    return 0


def _check_video_length(video: str, results_end_s: float) -> None:
    """Warn when the video and the results disagree on the length: probably not the same video."""
    from pipelines.decode import open_video  # PyAV

    with open_video(video) as v:
        duration = v.duration_s()
    if abs(duration - results_end_s) > max(1.0, 0.05 * duration):
        print(f"reelflow: warning: {video} is {duration:.1f} s but the results end at {results_end_s:.1f} s; "
              "are they of this video?", file=sys.stderr)
