"""`reelflow search` on a real stack (issue 21): jobs and streams indexed as they are stored, each
segment finding itself first, re-encoded, downscaled and trimmed copies finding their originals,
filters, cancel removing a job's vectors, --no-index, and a broken index never stopping results."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import pytest

from pipelines.synthetic import make_video
from services.index.search import answer, like_segment
from services.index.vectors import VectorIndex
from support.stack_process import UpProcess, fast_settings, reelflow, run, stack_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]  # a stack, real videos: about 3 minutes

ARCHIVE = ["mm_test.mp4", "sk_bikes.mp4", "sk_carphone_pristine.mp4", "mm_demo.mp4"]


def copy_of(src: Path, dst: Path, *, scale: float = 1.0, skip_s: float = 0.0, crf: int = 30) -> Path:
    """A re-encode of `src` (H.264 at another quality), optionally downscaled and trimmed at the start."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        rate = stream_in.average_rate or Fraction(25)
        width = int(stream_in.codec_context.width * scale) // 2 * 2
        height = int(stream_in.codec_context.height * scale) // 2 * 2
        stream = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        n = 0
        for frame in inp.decode(stream_in):
            if frame.time is not None and frame.time < skip_s:
                continue
            image = frame.reformat(width=width, height=height, format="yuv420p")
            image.pts, image.time_base = n, Fraction(1) / rate
            n += 1
            out.mux(stream.encode(image))
        out.mux(stream.encode(None))
    return dst


def search(env, *args) -> dict:
    return json.loads(run(env, "search", *args, "--json", timeout=180).stdout)


def state(env, job: str) -> str:
    return json.loads(run(env, "status", job, "--json").stdout)["state"]


def ids(result: dict) -> list[str]:
    matches = [m for g in result["groups"] for m in g["matches"]]
    return [m["id"] for m in sorted(matches, key=lambda m: -m["similarity"])]


def test_segments_find_themselves_and_copies_find_their_originals(tmp_path, shared_videos):
    home = tmp_path / "home"
    env = stack_env(home)
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        jobs = {}
        for name in ARCHIVE:
            out = json.loads(run(env, "submit", shared_videos / name, "--weights", "none", "--json").stdout)
            jobs[name] = out["job_id"]
        for job in jobs.values():
            wait_until(lambda: state(env, job) == "done", 300, f"job {job} did not finish", up)
        totals = {name: int(json.loads(run(env, "status", job, "--json").stdout)["segments_total"])
                  for name, job in jobs.items()}
        wait_until(lambda: json.loads(run(env, "status", "--json").stdout)["index"]["indexed"] >= sum(totals.values()),
                   60, "the indexer did not index every segment", up)
        # every segment finds itself first: through the CLI for the last segment of each job, through
        # the CLI's own functions in this process for every one (a process per segment took minutes)
        index = VectorIndex(fast_settings(home=home).index_location)
        for name, job in jobs.items():
            last = f"{job}:{totals[name] - 1}"
            assert ids(search(env, "--like", last, "--top", "3"))[0] == f"job:{last}"
            for segment in range(totals[name]):
                found = answer(index, like_segment(index, f"{job}:{segment}"), 3, None)
                assert ids(found)[0] == f"job:{job}:{segment}", (name, segment, found)
        # a copy held out of the index: re-encoded, downscaled, trimmed; its segment at t finds the
        # original's segment at the matching time in the top 3
        original = shared_videos / "sk_bikes.mp4"
        copies = {"re-encoded": (copy_of(original, tmp_path / "reenc.mp4", crf=36), 0.0),
                  "downscaled": (copy_of(original, tmp_path / "small.mp4", scale=0.5), 0.0),
                  "trimmed": (copy_of(original, tmp_path / "trim.mp4", skip_s=1.6), 1.6)}
        for what, (copy, offset) in copies.items():
            for at in (2.0, 5.0):
                found = search(env, "--like", copy, "--at", str(at), "--weights", "none", "--top", "3")
                [(start, end)] = found["query"]["segments"]
                wanted = {f"job:{jobs['sk_bikes.mp4']}:{i}" for i in range(totals["sk_bikes.mp4"])
                          if abs(1.6 * i - (start + offset)) < 0.9}
                assert wanted & set(ids(found)), (what, at, wanted, ids(found))
        # the trimmed copy is a duplicate of the original, starting 1.6 s into it
        found = search(env, "--duplicates-of", copies["trimmed"][0], "--weights", "none", "--min-similarity", "0.01")
        first = found["duplicates"][0]
        assert first["job"] == jobs["sk_bikes.mp4"] and abs(first["offset_s"] - 1.6) <= 0.8, found["duplicates"]
        # filters, and the plain output
        result = search(env, "--like", f"{jobs['mm_test.mp4']}:0", "--job", jobs["sk_bikes.mp4"], "--top", "5")
        assert ids(result) and all(i.startswith(f"job:{jobs['sk_bikes.mp4']}:") for i in ids(result))
        text = run(env, "search", "--like", f"{jobs['mm_test.mp4']}:1", "--top", "2").stdout
        assert "similarity 1.0000" in text and "mm_test.mp4" in text
        stats = json.loads(run(env, "search", "--stats", "--json").stdout)["tables"]
        assert [t["rows"] for t in stats] == [sum(totals.values())] and stats[0]["model"] == "x3d_xs"
    finally:
        up.stop()


def test_cancel_and_no_index_and_streams(tmp_path, video_dir, shared_videos):
    home = tmp_path / "home"
    env = stack_env(home)
    long_video = video_dir / "search_long.mp4"
    make_video(long_video, seconds=120.0, fps=10, size=(160, 120))
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        kept = json.loads(run(env, "submit", shared_videos / "mm_test.mp4", "--weights", "none", "--json",
                              "--no-index").stdout)["job_id"]
        wait_until(lambda: state(env, kept) == "done", 120, "the job did not finish", up)
        long_job = json.loads(run(env, "submit", long_video, "--weights", "none", "--stride", "0.2",
                                  "--json").stdout)["job_id"]
        wait_until(lambda: json.loads(run(env, "status", "--json").stdout)["index"]["indexed"] >= 20, 120,
                   "the long job's segments were not indexed", up)
        run(env, "cancel", long_job)
        wait_until(lambda: not json.loads(run(env, "search", "--stats", "--json").stdout)["tables"][0]["rows"], 60,
                   "the cancelled job's vectors are still in the index", up)
        gone = reelflow("search", "--like", f"{long_job}:3", env=env, check=False)
        assert gone.returncode == 1 and "is not in the index" in gone.stderr and len(gone.stderr.splitlines()) == 1
        not_indexed = reelflow("search", "--like", f"{kept}:0", env=env, check=False)
        assert not_indexed.returncode == 1 and "--no-index" in not_indexed.stderr
        # a stream's windows are indexed as they come; its latest window finds itself first
        run(env, "watch", shared_videos / "sk_bikes.mp4", "--name", "door", "--weights", "none")
        wait_until(lambda: json.loads(run(env, "search", "--stats", "--json").stdout)["tables"][0]["rows"] >= 3, 60,
                   "the stream's windows were not indexed", up)
        found = search(env, "--like-stream", "door", "--top", "3")
        assert ids(found)[0].startswith("stream:door:") and found["groups"][0]["stream"] == "door"
        assert search(env, "--like-stream", "door", "--stream", "nothere")["groups"] == []
        for args, message in [(["--like-stream", "nope"], "has no window in the index"),
                              (["--like", str(tmp_path / "none.mp4")], "no such file"),
                              (["--like", f"{kept}:0", "--since", "soon"], "is not a time"),
                              (["--like", f"{kept}:0", "--at", "3"], "--at goes with --like VIDEO")]:
            bad = reelflow("search", *args, env=env, check=False)
            assert bad.returncode == 1 and message in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr
    finally:
        up.stop()


def test_an_unusable_index_never_stops_results(tmp_path, clip_10s):
    home = tmp_path / "home"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = stack_env(home, REELFLOW_INDEX_URI=str(blocker / "index"))  # cannot be made, even by root
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        job = json.loads(run(env, "submit", clip_10s, "--weights", "none", "--json").stdout)["job_id"]
        wait_until(lambda: state(env, job) == "done", 120, "the job did not finish", up)
        status = wait_until(lambda: (s := json.loads(run(env, "status", "--json").stdout)["index"])["last_error"] and s,
                            60, "status does not say the index is failing", up)
        assert status["waiting"] >= 1 and "\n" not in status["last_error"] and "REELFLOW_INDEX_URI" in \
            status["last_error"]
        assert "failing: cannot open the vector index" in run(env, "status").stdout
        bad = reelflow("search", "--stats", env=env, check=False)
        assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "REELFLOW_INDEX_URI" in bad.stderr
    finally:
        up.stop()


def test_the_http_api_searches_like_the_cli(tmp_path, clip_10s):
    import base64

    import numpy as np
    import requests

    from support.stack_process import free_port

    home = tmp_path / "home"
    env = stack_env(home, REELFLOW_ALLOWED_ROOTS=f"{clip_10s.parent}:{tmp_path}")
    port = free_port()
    up = UpProcess(home, env, "--no-ray", "--weights", "none", "--http-port", str(port))
    url = f"http://127.0.0.1:{port}/v1/search"
    try:
        job = json.loads(run(env, "submit", clip_10s, "--weights", "none", "--json").stdout)["job_id"]
        wait_until(lambda: state(env, job) == "done", 120, "the job did not finish", up)
        wait_until(lambda: json.loads(run(env, "status", "--json").stdout)["index"]["indexed"] >= 6, 60,
                   "the job was not indexed", up)
        found = requests.get(url, params={"like": f"{job}:2", "top": 3, "thumbnails": "true"}, timeout=30).json()
        assert found == search(env, "--like", f"{job}:2", "--top", "3", "--thumbnails")
        [match, *_] = found["groups"][0]["matches"]
        assert match["id"] == f"job:{job}:2" and match["thumbnail"].startswith("data:image/jpeg;base64,")
        segment = json.loads(run(env, "results", job).stdout.splitlines()[2])
        vector = np.frombuffer(base64.b64decode(segment["embedding_b64"]), dtype="<f4").tolist()
        mine = requests.post(url, json={"vector": vector, "model": "x3d_xs", "weights": segment["weights"], "top": 1},
                             timeout=30).json()
        assert mine["groups"][0]["matches"][0]["id"] == f"job:{job}:2"
        # a video the stack can read, classified by the API as `search --like VIDEO` does here
        by_video = requests.get(url, params={"video": str(clip_10s), "at": 5, "weights": "none", "top": 3},
                                timeout=120).json()
        assert by_video["groups"] == search(env, "--like", clip_10s, "--at", "5", "--weights", "none",
                                            "--top", "3")["groups"]
        assert by_video["groups"][0]["job"] == job and by_video["groups"][0]["matches"][0]["start_s"] <= 5
        twins = requests.get(f"{url}/duplicates", params={"video": str(clip_10s), "weights": "none"}, timeout=120)
        [twin] = twins.json()["duplicates"]
        assert twin["job"] == job and abs(twin["offset_s"]) < 0.5 and twin["score"] > 0.99, twins.text
        for params, code, words in [({"like": f"{job}:99"}, 404, "not in the index"), ({}, 400, "give one of"),
                                    ({"like": f"{job}:1", "since": "soon"}, 400, "is not a time"),
                                    ({"like": f"{job}:1", "at": 3}, 400, "goes with `video`"),
                                    ({"video": str(tmp_path / "nowhere.mp4")}, 400, "nowhere.mp4"),
                                    ({"video": "/etc/hostname"}, 403, "allowed"),
                                    ({"video": str(clip_10s), "model": "resnet"}, 422, "unknown model")]:
            response = requests.get(url, params=params, timeout=60)
            assert response.status_code == code and words in response.text, response.text
    finally:
        up.stop()
