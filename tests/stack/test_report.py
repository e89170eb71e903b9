"""`reelflow report RESULTS --video VIDEO -o report.html` as a user runs it: `reelflow classify --json
--embeddings` output in, one HTML file out that renders in a real browser with the network cut off
and asks for nothing beyond itself."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.browser import blank_share, chromium_page, distinct_colours

REELFLOW = str(Path(sys.executable).parent / "reelflow")


def run(*args, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([REELFLOW, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def segment(index: int, start: float, end: float, labels: list[str], scores: list[float],
            embedding: list[float] | None = None, form: str = "list") -> dict:
    """A segment result as `reelflow classify --json` (form "list") or the stack (form "base64") writes it."""
    row = {"source": "v.mp4", "index": index, "start_s": start, "end_s": end, "model": "x3d_xs",
           "weights": "kinetics (X3D_XS.pyth)", "labels": labels, "scores": scores, "frames": 48,
           "random_weights": False}
    if embedding is not None and form == "list":
        row["embedding"] = embedding
    elif embedding is not None:
        row["embedding_b64"] = base64.b64encode(np.asarray(embedding, "<f4").tobytes()).decode()
    return row


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.mark.shared_data
def test_the_report_of_a_real_video_renders_offline_and_loads_nothing_from_the_network(shared_videos, mm_demo_results,
                                                                                      tmp_path):
    report = tmp_path / "report.html"
    result = run("report", mm_demo_results, "--video", shared_videos / "mm_demo.mp4", "-o", report, check=True)
    assert f"wrote {report} (7 segments" in result.stderr
    rows = [json.loads(line) for line in mm_demo_results.read_text().splitlines()]
    top_labels = {row["labels"][0] for row in rows}

    shot = tmp_path / "report.png"
    with chromium_page() as (page, requested):
        page.context.set_offline(True)  # "works offline": nothing to fetch, nothing fetched
        page.goto(report.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        assert page.locator(".js-plotly-plot").count() == 3  # timeline, score curves, similarity heatmap
        assert page.locator(".js-plotly-plot .legend").count() == 1  # the score curves'
        assert set(page.locator("p.legend > span").all_inner_texts()) == top_labels  # the timeline's
        assert page.locator(".heatmaplayer").count() == 1
        thumbnails = page.locator(".thumbs img")
        assert thumbnails.count() == 7  # one per segment...
        assert page.evaluate("[...document.querySelectorAll('.thumbs img')]"
                             ".every(img => img.complete && img.naturalWidth > 0)")  # ...each a decoded picture
        table = page.locator("table.labels tbody tr")
        assert table.count() == len(top_labels)
        assert set(table.locator("td:first-child").all_inner_texts()) == top_labels
        assert "random weights" in page.locator(".warn").inner_text().lower()
        page.screenshot(path=str(shot), full_page=True)
    assert requested == [report.as_uri()], requested  # the file itself; its pictures are inline data: URIs

    assert distinct_colours(shot) > 5000  # thumbnails, bands, curves, a heatmap: far from blank
    assert blank_share(shot) < 0.8


def test_the_html_is_one_self_contained_file(tmp_path):
    rows = [segment(i, 1.6 * i, 1.6 * (i + 1), [label, "other"], [0.8, 0.1], [1.0, float(i), 0.5], form)
            for i, (label, form) in enumerate([("abseiling", "list"), ("abseiling", "base64"), ("archery", "list")])]
    report = tmp_path / "r.html"
    run("report", write_lines(tmp_path / "r.jsonl", rows), "-o", report, check=True)
    html = report.read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//", html)
    assert not re.search(r"@import|@font-face|url\(\s*['\"]?(https?:)?//", html)
    assert "<script src" not in html and html.count("Plotly.newPlot(") == 3  # plotly.js is inline, once
    assert len(re.findall(r"\bplotly\.js v\d", html)) == 1
    assert "Give the video" in html  # no --video: no thumbnails, and the page says how to get them


def test_labels_by_total_time_count_overlapping_segments_once(tmp_path):
    # the tail segment (8.4-10) overlaps #5 (8.0-9.6): #5 holds 8.0-8.4 only
    rows = [segment(0, 0.0, 1.6, ["a"], [0.9]), segment(1, 1.6, 3.2, ["b"], [0.6]), segment(2, 3.2, 4.8, ["a"], [0.5]),
            segment(3, 4.8, 6.4, ["a"], [0.7]), segment(4, 6.4, 8.0, ["b"], [0.4]), segment(5, 8.0, 9.6, ["c"], [0.3]),
            segment(6, 8.4, 10.0, ["a"], [0.8])]
    from services.report.segments import load_results
    from services.report.timeline import bands, label_times

    times = label_times(bands(load_results(str(write_lines(tmp_path / "r.jsonl", rows))).segments))
    assert [(t.label, round(t.seconds, 6), t.segments) for t in times] == [("a", 6.4, 4), ("b", 3.2, 2), ("c", 0.4, 1)]
    assert round(sum(t.share for t in times), 6) == 1.0


def test_without_embeddings_the_report_says_how_to_get_the_similarity_map(tmp_path):
    rows = [segment(0, 0.0, 1.6, ["a"], [0.9]), segment(1, 1.6, 3.2, ["b"], [0.6])]
    report = tmp_path / "r.html"
    run("report", write_lines(tmp_path / "r.jsonl", rows), "-o", report, check=True)
    html = report.read_text()
    assert "No embeddings in these results" in html and html.count("Plotly.newPlot(") == 2


@pytest.fixture(scope="module")
def redis_home(tmp_path_factory):
    """A running embedded Redis (a stack with no jobs) for looking up job ids."""
    from services.store.embedded import EmbeddedRedis

    home = tmp_path_factory.mktemp("home")
    server = EmbeddedRedis(home)
    server.start()
    yield home
    server.stop()


GOOD = segment(0, 0.0, 1.6, ["a"], [0.9])


@pytest.mark.parametrize("target, lines, extra, message", [
    ("missing.jsonl", None, [], "no such file"),
    ("empty.jsonl", [], [], "holds no segments"),
    ("blank.jsonl", ["", "  "], [], "holds no segments"),
    ("cut.jsonl", [GOOD, '{"index": 1, "start_s"'], [], "line 2 is not JSON"),
    ("table.txt", ["  #    start      end frames  top labels (score)"], [], "line 1 is not JSON"),
    ("list.jsonl", [[1, 2, 3]], [], "line 1 is not a JSON object"),
    ("partial.jsonl", [{"index": 0, "labels": []}], [], "line 1 has no start_s, end_s, scores"),
    ("mismatch.jsonl", [{**GOOD, "scores": [0.5, 0.2]}], [], "1 labels but 2 scores"),
    ("b64.jsonl", [{**GOOD, "embedding_b64": "not base64!"}], [], "line 1 is not a valid segment result"),
    ("twice.jsonl", [GOOD, GOOD], [], "two segments with index 0"),
    ("backwards.jsonl", [{**GOOD, "start_s": 2.0, "end_s": 1.0}], [], "ends before it starts"),
    ("ok.jsonl", [GOOD], ["--video", "{results}"], "--video: cannot read"),
    ("ok.jsonl", [GOOD], ["--video", "{tmp}/missing.mp4"], "no such file"),
    ("nojob", None, [], "cannot be looked up as a job: no reelflow stack is running"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, target, lines, extra, message):
    if lines is not None:
        write_lines(tmp_path / target, lines)
    path = tmp_path / target if lines is not None or target.endswith(".jsonl") else target
    fill = {"results": tmp_path / target, "tmp": tmp_path}
    result = run("report", path, *[a.format(**fill) for a in extra], "-o", tmp_path / "r.html", "--home",
                 tmp_path / "no-stack")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("reelflow: error:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_an_unknown_job_on_a_running_stack_is_one_line(redis_home, tmp_path):
    result = run("report", "3f0c9a1e2b7d4c55", "-o", tmp_path / "r.html", "--home", redis_home)
    assert result.returncode == 1
    assert result.stderr.strip() == "reelflow: error: no file and no job '3f0c9a1e2b7d4c55' (finished jobs expire " \
                                    "after REELFLOW_RESULT_TTL_S)"
