"""The report's "Similar moments elsewhere": for some of the video's segments, the most similar
segments of other videos and streams in the vector index (`reelflow search`), with a thumbnail of
each where that video is readable here.

    >>> html = similar_elsewhere(segments, VectorIndex("~/.local/share/reelflow/index"), "job 3f2a...")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape

import numpy as np

from pipelines.results import SegmentResult
from services.index.search import thumbnails_by_id
from services.index.vectors import Match, VectorIndex, VectorIndexError, quote

MAX_QUERIES = 12  # segments searched for (evenly spaced over a long video)
PER_SEGMENT = 3


def similar_elsewhere(segments: Sequence[SegmentResult], index: VectorIndex | None, origin: str) -> str:
    """The section's HTML. `origin`: the results' origin ("job ID" or a file): its own segments are
    left out of the matches."""
    if index is None:
        return _note("No vector index here (`REELFLOW_INDEX_URI`, or a stack's `$REELFLOW_HOME/index`).")
    if not all(s.embedding is not None and s.embedding.size for s in segments):
        return _note("No embeddings in these results, so nothing to search with.")
    chosen = sorted({round(i) for i in np.linspace(0, len(segments) - 1, min(MAX_QUERIES, len(segments)))})
    picks = [segments[i] for i in chosen]
    source = segments[0].source
    own = (f"job != {quote(origin.removeprefix('job '))}" if origin.startswith("job ")  # the job's own segments
           else f"source != {quote(source if '://' in source else os.path.abspath(source))}")  # the same video's
    first = segments[0]
    try:
        found = [(s, index.search(first.model, first.weights, s.embedding, PER_SEGMENT, own)) for s in picks]
    except VectorIndexError as e:
        return _note(f"The vector index could not be searched: {escape(str(e))}")
    if not any(matches for _, matches in found):
        return _note(f"Nothing else is indexed for {first.model} with these weights yet: other jobs and streams "
                     "of a stack are indexed as they are stored.")
    pictures = thumbnails_by_id([m.row for _, matches in found for m in matches])
    rows = []
    for segment, matches in found:
        cells = "".join(_match_cell(m, pictures.get(m.row["id"])) for m in matches) or "<td>—</td>"
        rows.append(f"<tr><th>#{segment.index} {segment.start_s:.1f}–{segment.end_s:.1f} s<br>"
                    f"<small>{escape(segment.labels[0] if segment.labels else '')}</small></th>{cells}</tr>")
    return ('<table class="elsewhere"><tbody>' + "".join(rows) + "</tbody></table>"
            + _note(f"Cosine similarity (1: the same) of {len(picks)} of this video's segments to the most similar "
                    f"segments of other videos and streams indexed for {escape(first.model)}; "
                    "`reelflow search --like JOB:SEGMENT` searches with any of them."))


def _match_cell(match: Match, picture: str | None) -> str:
    r = match.row
    where = f"stream {r['stream']}" if r["kind"] == "stream" else os.path.basename(r["source"]) or r["source"]
    image = f'<img src="{picture}" alt="">' if picture else ""
    return (f"<td>{image}<div>{escape(where)} {r['start_s']:.1f}–{r['end_s']:.1f} s<br>"
            f"<b>{match.similarity:.3f}</b> {escape(r['label'])}</div></td>")


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'
