"""`reelflow annotate VIDEO RESULTS -o out.mp4` as a user runs it: the output has every frame of the
source at the same times (so the same frame count and frame rate), in H.264, and each frame shows
its segment's top labels where the source shows none."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.annotate import caption, segment_at
from pipelines.synthetic import make_video
from support.raw_streams import raw_copy

REELFLOW = str(Path(sys.executable).parent / "reelflow")


def run(*args, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([REELFLOW, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def write_results(path: Path, spans: list[tuple[float, float]]) -> Path:
    """Results as `reelflow classify --json` writes them, one segment per (start, end)."""
    with path.open("w") as f:
        for i, (start, end) in enumerate(spans):
            f.write(json.dumps({"source": "v", "index": i, "start_s": start, "end_s": end, "model": "x3d_xs",
                                "weights": "test", "labels": [f"action {i}", "other", "third"],
                                "scores": [0.7, 0.2, 0.1], "frames": 1}) + "\n")
    return path


def every_1_6_s(seconds: float) -> list[tuple[float, float]]:
    starts = np.arange(0, seconds, 1.6)
    return [(round(float(s), 6), round(min(float(s) + 1.6, seconds), 6)) for s in starts]


def compare(source: Path, annotated: Path, box: tuple[int, int]) -> dict:
    """Frame times, rates, codecs of both, and the mean absolute pixel difference per frame: over the
    whole frame and inside the caption box (h, w) at the top left."""
    def frames(path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate, codec = stream.average_rate, stream.codec_context.name
            decoded = [(frame.pts * frame.time_base, frame.to_ndarray(format="rgb24"))
                       for frame in container.decode(stream)]
        decoded.sort(key=lambda item: item[0])  # AVI labels B-frames out of order; compare by time
        return rate, codec, decoded

    src_rate, _, src = frames(source)
    out_rate, out_codec, out = frames(annotated)
    whole, in_box = [], []
    for (_, a), (_, b) in zip(src, out):
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        diff = np.abs(a[:h, :w].astype(np.int16) - b[:h, :w].astype(np.int16))
        whole.append(float(diff.mean()))
        in_box.append(float(diff[:box[0], :box[1]].mean()))
    return {"source_times": [t for t, _ in src], "times": [t for t, _ in out], "source_rate": src_rate,
            "rate": out_rate, "codec": out_codec, "whole": whole, "in_box": in_box, "size": out[0][1].shape[:2]}


@pytest.mark.shared_data
def test_a_real_video_annotated_from_classify_output_keeps_its_frames_and_rate(shared_videos, mm_demo_results,
                                                                              tmp_path):
    video, out = shared_videos / "mm_demo.mp4", tmp_path / "annotated.mp4"
    result = run("annotate", video, mm_demo_results, "-o", out, check=True)
    assert f"wrote {out} (280 frames, 340x256, H.264)" in result.stderr
    box = caption(["x"] * 3, [1.0] * 3, 340, 256).shape[:2]
    seen = compare(video, out, box)
    assert seen["codec"] == "h264"
    assert len(seen["times"]) == len(seen["source_times"]) == 280
    assert seen["times"] == seen["source_times"] and seen["rate"] == seen["source_rate"] == 28
    assert np.mean(seen["whole"]) > 2.0  # visibly different...
    assert min(seen["in_box"]) > 20.0  # ...on every frame, where the labels are


@pytest.mark.parametrize("make, size", [
    # B-frames, 30 fps
    (dict(seconds=4.0, fps=30), (320, 240)),
    # variable frame rate with a start offset, in a 1/12800 time base
    (dict(pts=[1000 + i * 512 + (i % 3) * 100 for i in range(80)], time_base=Fraction(1, 12800), fps=25), (320, 240)),
    # portrait 1080p
    (dict(seconds=1.0, fps=24), (608, 1080)),
])
def test_generated_videos_keep_every_frame_at_its_time(tmp_path, make, size):
    video, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(video, size=size, **make)
    results = write_results(tmp_path / "r.jsonl", every_1_6_s(5.0))
    run("annotate", video, results, "-o", out, check=True)
    seen = compare(video, out, caption(["x"] * 3, [1.0] * 3, *size).shape[:2])
    assert seen["times"] == seen["source_times"], "every frame, at its own time"
    assert seen["codec"] == "h264" and seen["size"] == (size[1], size[0])
    assert min(seen["in_box"]) > 20.0


def test_a_raw_h264_stream_without_timestamps_is_annotated_at_its_frame_rate(tmp_path):
    video, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(video, seconds=2.0, fps=24, size=(160, 120))  # with B-frames
    raw = raw_copy(video, tmp_path / "camera.h264", "h264")
    run("annotate", raw, write_results(tmp_path / "r.jsonl", every_1_6_s(2.0)), "-o", out, check=True)
    seen = compare(video, out, caption(["x"] * 3, [1.0] * 3, 160, 120).shape[:2])
    assert len(seen["times"]) == 48 and seen["times"] == seen["source_times"] and seen["rate"] == 24
    assert min(seen["in_box"]) > 20.0


@pytest.mark.shared_data
def test_an_avi_with_out_of_order_timestamps_becomes_an_mp4_with_the_same_frames_and_rate(shared_videos, tmp_path):
    video, out = shared_videos / "mm_test.avi", tmp_path / "out.mp4"
    run("annotate", video, write_results(tmp_path / "r.jsonl", every_1_6_s(6.56)), "-o", out, check=True)
    seen = compare(video, out, caption(["x"] * 3, [1.0] * 3, 320, 240).shape[:2])
    assert len(seen["times"]) == 164 and seen["times"] == seen["source_times"]
    assert seen["rate"] == seen["source_rate"] == 25


def test_frames_outside_every_segment_are_left_as_they_were(tmp_path):
    video, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(video, seconds=4.0, fps=30)
    run("annotate", video, write_results(tmp_path / "r.jsonl", [(0.0, 1.0), (2.0, 3.0)]), "-o", out, check=True)
    seen = compare(video, out, caption(["x"] * 3, [1.0] * 3, 320, 240).shape[:2])
    labelled = [d for t, d in zip(seen["times"], seen["in_box"]) if t < 1 or 2 <= t < 3]
    bare = [d for t, d in zip(seen["times"], seen["in_box"]) if 1 <= t < 2 or t >= 3]
    assert len(labelled) == len(bare) == 60
    assert min(labelled) > 20.0 and max(bare) < 10.0  # bare frames differ by re-encoding only


@pytest.mark.parametrize("t, expected", [
    (0.0, 0), (1.59, 0), (1.6, 1), (3.3, 2),  # back to back
    (8.2, 5), (8.4, 6), (9.99, 6),  # the tail segment (8.4-10) takes over from #5 (8.0-9.6) at its start
    (10.0, None), (-0.1, None),  # after the end, before the start
])
def test_the_current_segment_is_the_latest_one_started(t, expected):
    starts = [0.0, 1.6, 3.2, 4.8, 6.4, 8.0, 8.4]
    ends = [1.6, 3.2, 4.8, 6.4, 8.0, 9.6, 10.0]
    assert segment_at(starts, ends, t) == expected


def test_a_gap_between_segments_has_no_current_segment():
    assert segment_at([0.0, 2.0], [1.0, 3.0], 1.5) is None


@pytest.mark.parametrize("width, height", [(320, 240), (340, 256), (1280, 720), (1920, 1080), (3840, 2160),
                                           (608, 1080), (96, 64)])
def test_the_caption_grows_with_the_frame_and_stays_inside_it(width, height):
    box = caption(["playing xylophone", "a label far too long to fit on a small frame at all", "hurdling"],
                  [0.62, 0.2, 0.1], width, height)
    assert box.shape[1] <= width and box.shape[0] <= height
    if height >= 240:  # a line of text is a fixed share of the frame height
        assert 0.15 <= box.shape[0] / height <= 0.25, box.shape


@pytest.mark.parametrize("args, message", [
    (["{missing}", "{results}"], "no such file"),
    (["{results}", "{results}"], "as video"),
    (["{video}", "{video}"], "is not text"),
    (["{video}", "{missing}.jsonl"], "no such file"),
    (["{video}", "{results}", "-o", "{video}"], "is the video itself"),
    (["{video}", "{results}", "-o", "{tmp}/no/such/dir/out.mp4"], "cannot write"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, args, message):
    video = tmp_path / "in.mp4"
    make_video(video, seconds=1.0)
    results = write_results(tmp_path / "r.jsonl", [(0.0, 1.0)])
    fill = {"video": video, "results": results, "missing": tmp_path / "missing", "tmp": tmp_path}
    result = run("annotate", *[a.format(**fill) for a in args])
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_terminal_sees_progress(tmp_path):
    video, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(video, seconds=3.0, fps=30)
    results = write_results(tmp_path / "r.jsonl", every_1_6_s(3.0))
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([REELFLOW, "annotate", str(video), str(results), "-o", str(out)], stderr=follower,
                              stdout=subprocess.DEVNULL, timeout=120)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"annotating" in shown and b"90/90" in shown and b"\r" in shown, shown  # a live bar, redrawn
