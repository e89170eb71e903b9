"""What the CLI writes: one segment writer for JSON lines and CSV, output files that are never
replaced by accident nor left half-written, and a results file name per video that never clashes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from pipelines.errors import ReelflowError
from services.cli.output import SegmentWriter, output_file, result_names

SEGMENT = {"job_id": "j1", "index": 0, "start_s": 0.0, "end_s": 1.6, "frames": 48, "model": "x3d_xs",
           "weights": "none", "labels": ["a", "b"], "scores": [0.75, 0.125]}


def test_jsonl_and_csv_from_one_writer():
    lines = io.StringIO()
    SegmentWriter(lines).write_all([SEGMENT, {**SEGMENT, "index": 1}])
    assert [json.loads(line)["index"] for line in lines.getvalue().splitlines()] == [0, 1]
    table = io.StringIO()
    SegmentWriter(table, "csv").write(SEGMENT)
    rows = list(csv.reader(io.StringIO(table.getvalue())))
    assert rows[0][:3] == ["job_id", "index", "start_s"] and rows[1][-2:] == ["a|b", "0.75|0.125"]


@pytest.mark.parametrize("sources, names", [
    (["v/door.mp4", "v/yard.mkv"], ["door.jsonl", "yard.jsonl"]),
    (["v/clip.mp4", "v/clip.avi"], ["clip.mp4.jsonl", "clip.avi.jsonl"]),
    (["x/cam1/clip.mp4", "y/cam1/clip.mp4"], ["x_cam1_clip.mp4.jsonl", "y_cam1_clip.mp4.jsonl"]),
    (["v/a.mp4", "w/b.mp4", "v/a.mp4"], ["a.jsonl", "b.jsonl", "a~2.jsonl"]),
    (["https://cams.example/live/door.mp4", "v/door.mp4"], ["live_door.mp4.jsonl", "v_door.mp4.jsonl"]),
])
def test_result_names_never_clash(tmp_path, monkeypatch, sources, names):
    monkeypatch.chdir(tmp_path)
    assert result_names(sources) == names
    assert len(set(result_names(sources))) == len(sources)


def test_an_existing_file_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "results.jsonl"
    target.write_text("earlier run\n")
    with pytest.raises(ReelflowError, match="exists already.*--overwrite"):
        with output_file(target) as f:
            f.write("new\n")
    assert target.read_text() == "earlier run\n"
    with output_file(target, overwrite=True) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"


def test_a_failed_write_leaves_no_half_file(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(RuntimeError):
        with output_file(target) as f:
            f.write("<html>")
            raise RuntimeError("the report failed half-way")
    assert list(tmp_path.iterdir()) == []
