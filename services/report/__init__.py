"""An HTML report of one video's segments: one self-contained file that opens offline.

    >>> from services.report import render_report
    >>> from services.report.segments import load_results
    >>> html = render_report(load_results("segments.jsonl"), video="video.mp4")   # doctest: +SKIP

It shows the top label per segment as coloured bands over time (and a thumbnail per segment
when the video is given), the scores of the top classes over time, which parts of the video look
alike (the cosine similarity of segment embeddings) and the labels by the time they hold.
`reelflow report` is the command (services.cli.view).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and plotly load only when a report is made: `reelflow --help` stays fast
    from services.report.segments import Results

TOP_CLASSES = 5
MAX_THUMBNAILS = 240  # a long video's page stays light: evenly spaced segments past this


def render_report(results: Results, video: str | os.PathLike | None = None, index=None) -> str:
    """The report's HTML. `video` (the video the results are of) adds a thumbnail per segment;
    `index` (a services.index VectorIndex) the segments of other videos and streams most like these."""
    import numpy as np

    from services.report import figures, page, timeline  # plotly: loads when a report is made
    from pipelines.thumbnails import thumbnails  # PyAV
    from services.report.elsewhere import similar_elsewhere

    segments = results.segments
    bands = timeline.bands(segments)
    times = timeline.label_times(bands)
    top = timeline.top_classes(segments, TOP_CLASSES)
    colours = figures.colours_for([t.label for t in times] + [label for label in top if label not in
                                                              {t.label for t in times}])

    held = {t.label: colours[t.label] for t in times}
    timeline_html = figures.timeline_figure(bands, held) + page.legend(held)
    if video is not None:
        shown = bands if len(bands) <= MAX_THUMBNAILS else [
            bands[round(i)] for i in np.linspace(0, len(bands) - 1, MAX_THUMBNAILS)]
        uris = thumbnails(video, [(b.start_s + b.end_s) / 2 for b in shown])
        timeline_html += page.thumbnail_grid([
            (uri, colours[b.label], b.label, f"#{b.index} {b.start_s:.1f}–{b.end_s:.1f} s")
            for uri, b in zip(uris, shown)])
        if len(shown) < len(bands):
            timeline_html += (f'<p class="note">Thumbnails of {len(shown)} of the {len(bands)} segments, '
                              "evenly spaced.</p>")
    else:
        timeline_html += '<p class="note">Give the video (<code>--video PATH</code>) for a thumbnail per segment.</p>'
    sections = [("Top label over time", timeline_html)]
    sections.append((f"Scores of the top {len(top)} classes", figures.curves_figure(
        segments, timeline.score_curves(segments, top), colours)
        + '<p class="note">Each point is a segment; a gap means the label was not in that segment\'s top '
          f'{max(len(s.labels) for s in segments)}.</p>'))
    matrix = timeline.similarity(segments)
    if matrix is None:
        look_alike = ('<p class="note">No embeddings in these results: make them with '
                      '<code>reelflow classify VIDEO --json --embeddings</code> (jobs store them by default).</p>')
    else:
        heatmap, subsampled = figures.similarity_figure(segments, matrix)
        look_alike = heatmap + ('<p class="note">Cosine similarity of the segments\' embeddings: bright squares '
                                'off the diagonal are parts of the video that look alike'
                                + (f"; {figures.MAX_HEATMAP} of {len(segments)} segments shown, evenly spaced"
                                   if subsampled else "") + ".</p>")
    sections.append(("Which parts look alike", look_alike))
    sections.append(("Similar moments elsewhere", similar_elsewhere(segments, index, results.origin)))
    sections.append(("Labels by total time", page.label_table(
        [(colours[t.label], t.label, t.seconds, t.share, t.segments, t.mean_score) for t in times])))

    first = segments[0]
    source = first.source or results.origin
    meta = [f"{len(segments)} segments", f"{bands[-1].end_s - bands[0].start_s:.1f} s",
            f"model {first.model}", f"weights {first.weights}", f"from {results.origin}",
            time.strftime("made %Y-%m-%d %H:%M", time.localtime())]
    if results.note:
        meta.append(results.note)
    warning = ("Random weights (--weights none): these labels and scores are meaningless, good only to try "
               "reelflow out." if any(s.random_weights for s in segments) else None)
    return page.render_page(os.path.basename(source) or source, meta, sections, figures.plotly_js(), warning)
