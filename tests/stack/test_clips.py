"""Evidence clips on a real stack (issue 22): a real RTSP camera plays a real video; a rule on a
label the checkpoint's model gives records clips that play, start on a keyframe within one GOP
before `event - pre`, last `pre + post` within a GOP, and hold exactly the camera's frames; the
clip travels in the stream's events, `clips list/get`, the HTTP API and the dashboard's data; the
rules change while the stream runs; an unwritable clip directory fails clips, not the stream."""

from __future__ import annotations

import hashlib
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from pipelines.synthetic import frame_image
from support.browser import chromium_page
from support.rtsp_camera import Camera
from support.stack_process import UpProcess, free_port, reelflow, run, stack_env, wait_until

pytestmark = pytest.mark.slow  # two stacks, a camera, a model: about 3 minutes

FPS, GOP = 25, 25
PRE, POST = 2.0, 2.5


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory) -> Path:
    """8 s that loop: 4 s of a still grey scene, then 4 s of a busy one (a keyframe every second):
    the model's label changes twice per loop, so a label enters again and again, each time well
    after the stream began."""
    path = tmp_path_factory.mktemp("clips") / "scene.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0",
                          "crf": "23"}
        for i in range(8 * FPS):
            if i < 4 * FPS:  # grey, but for a small corner block that tells the frames apart
                image = np.full((240, 320, 3), 96, np.uint8)
                image[:16, :16] = 2 * i
            else:
                image = frame_image(i, 320, 240)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def frame_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [hashlib.md5(f.to_ndarray(format="gray").tobytes()).hexdigest() for f in container.decode(video=0)]


def busy_label(env, video: Path, weights: Path) -> str:
    """The label the model gives the busy half of the scene (what the rule records)."""
    out = run(env, "classify", video, "--weights", weights, "--json", "--topk", "1", timeout=300).stdout
    segments = [json.loads(line) for line in out.splitlines() if line.strip()]
    return max(segments, key=lambda s: s["start_s"])["labels"][0]


def events(env, name: str) -> list[dict]:
    out = run(env, "tail", name, "--events", "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def listing(env) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(run(env, "streams", "list", "--json").stdout)}


def probe(path: Path) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                           "-of", "json", str(path)], capture_output=True, text=True, check=True)
    info = json.loads(done.stdout)
    return {"codec": info["streams"][0]["codec_name"], "duration": float(info["format"]["duration"])}


def test_a_label_rule_records_clips_of_the_cameras_own_frames(tmp_path, scene_video, peaked_checkpoint):
    weights, _ = peaked_checkpoint("x3d_xs")
    home = tmp_path / "home"
    env = stack_env(home)
    label = busy_label(env, scene_video, weights)
    port = free_port()
    cam = Camera(scene_video).start()
    up = UpProcess(home, env, "--no-ray", "--weights", str(weights), "--http-port", str(port))
    try:
        run(env, "watch", cam.url, "--name", "gate", "--weights", weights, "--record", label,
            "--pre", str(PRE), "--post", str(POST))
        wait_until(lambda: any(e["event"] == "clip" for e in events(env, "gate")), 120,
                   f"no clip was recorded for label {label!r}", up)
        entered = [e for e in events(env, "gate") if e["event"] == "enter" and e["label"] == label]
        finished = [e for e in events(env, "gate") if e["event"] == "clip"]
        assert entered and "clip" in entered[0] and entered[0]["clip"]["state"] == "recording"
        clip = finished[0]["clip"]
        assert clip["state"] == "ready", clip
        assert clip["id"] == entered[0]["clip"]["id"] and clip["label"] == label
        # starts on a keyframe within one GOP before event - pre; lasts pre + post within a GOP
        assert clip["event_s"] - PRE - GOP / FPS - 0.05 <= clip["start_s"] <= clip["event_s"] - PRE + 0.05, clip
        info = probe(Path(clip["path"]))
        assert info["codec"] == "h264"
        assert PRE + POST - 0.1 <= info["duration"] <= PRE + POST + GOP / FPS + 0.1, info
        assert abs(info["duration"] - clip["duration_s"]) < 0.1
        # its frames are the camera's own, in order (the camera sends the file's pictures, looped)
        source = frame_hashes(scene_video)
        got = frame_hashes(Path(clip["path"]))
        first = source.index(got[0])
        assert got == [source[(first + k) % len(source)] for k in range(len(got))]
        with av.open(clip["path"]) as container:
            assert next(container.decode(video=0)).key_frame

        # the CLI lists it and copies it; the API lists it and serves it (ranges too)
        listed = [json.loads(line) for line in run(env, "clips", "list", "--stream", "gate", "--json").stdout.splitlines()]
        assert clip["id"] in {c["id"] for c in listed}
        copy = tmp_path / "copy.mp4"
        run(env, "clips", "get", clip["id"], "-o", copy)
        assert copy.read_bytes() == Path(clip["path"]).read_bytes()
        again = reelflow("clips", "get", clip["id"], "-o", str(copy), env=env, check=False)
        assert again.returncode == 1 and "exists" in again.stderr and len(again.stderr.splitlines()) == 1
        api = f"http://127.0.0.1:{port}"
        assert clip["id"] in {c["id"] for c in requests.get(f"{api}/v1/clips", params={"stream": "gate"}, timeout=10).json()}
        video = requests.get(f"{api}/v1/clips/{clip['id']}/video", timeout=10)
        assert video.status_code == 200 and video.content == copy.read_bytes()
        assert video.headers["content-type"] == "video/mp4"
        part = requests.get(f"{api}/v1/clips/{clip['id']}/video", headers={"Range": "bytes=0-99"}, timeout=10)
        assert part.status_code == 206 and part.content == video.content[:100]
        assert requests.get(f"{api}/v1/clips/nope", timeout=10).status_code == 404
        board = requests.get(f"{api}/v1/dashboard", timeout=10).json()
        [camera] = [c for c in board["cameras"] if c["name"] == "gate"]
        assert clip["id"] in {c["id"] for c in camera["clips"]} and camera["rules"]["record"] == [label]

        # the dashboard, in a real browser: the clip plays in the page; the rules form saves
        with chromium_page() as (page, _):
            page.goto(f"{api}/")
            player = page.locator(f'figure[data-clip="{clip["id"]}"] video')
            player.wait_for(timeout=30_000)
            page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=player.element_handle(),
                                   timeout=30_000)  # the browser read the MP4's header from the API
            assert abs(player.evaluate("v => v.duration") - info["duration"]) < 0.2
            form = page.locator('article[data-camera="gate"] form.rules')
            form.locator('[name="pre_s"]').fill("3")
            form.locator("button").click()
            form.locator(".saved", has_text="saved").wait_for(timeout=10_000)
        assert json.loads(run(env, "streams", "list", "--json").stdout)[0]["rules"]["pre_s"] == 3

        # streams list says what it records and how much memory its packet buffer holds
        row = listing(env)["gate"]
        assert row["recording"]["record"] == [label] and row["recording"]["mode"] == "remux"
        assert 0 < row["recording"]["ring_bytes"] < 8 * 2**20 and row["recording"]["clips_ready"] >= 1
        assert "records" in run(env, "streams", "list").stdout

        # the rules change while it runs: the API, then the CLI
        changed = requests.put(f"{api}/v1/streams/gate/recording",
                               json={"record": ["*"], "pre_s": 1, "post_s": 1}, timeout=10)
        assert changed.status_code == 200 and changed.json()["record"] == ["*"]
        wait_until(lambda: listing(env)["gate"]["recording"]["record"] == ["*"], 30, "the new rules did not apply", up)
        bad = requests.put(f"{api}/v1/streams/gate/recording", json={"record": [], "pre_s": -1}, timeout=10)
        assert bad.status_code == 422
        assert requests.put(f"{api}/v1/streams/nope/recording", json={"record": []}, timeout=10).status_code == 404
        run(env, "streams", "record", "gate", "--record", "none")
        wait_until(lambda: not (listing(env)["gate"]["recording"] or {}).get("record"), 30,
                   "recording did not stop", up)
    finally:
        up.stop()
        cam.stop()


def test_an_unwritable_clip_directory_fails_clips_and_the_stream_goes_on(tmp_path, scene_video, peaked_checkpoint):
    weights, _ = peaked_checkpoint("x3d_xs")
    locked = tmp_path / "locked"
    locked.mkdir()
    immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    if not immutable:  # a filesystem without attributes: a directory under a file cannot be made either
        locked = tmp_path / "a-file"
        locked.write_text("not a directory")
    home = tmp_path / "home"
    env = stack_env(home, REELFLOW_CLIPS_DIR=str(locked / "clips"))
    cam = Camera(scene_video).start()
    up = UpProcess(home, env, "--no-ray", "--weights", str(weights))
    try:
        run(env, "watch", cam.url, "--name", "yard", "--weights", weights, "--record", "all",
            "--pre", "1", "--post", "1")
        wait_until(lambda: any(e["event"] == "clip" for e in events(env, "yard")), 120, "no clip event came", up)
        failed = [e["clip"] for e in events(env, "yard") if e["event"] == "clip"]
        assert failed[0]["state"] == "failed" and failed[0]["reason"] and "\n" not in failed[0]["reason"]
        row = listing(env)["yard"]
        assert row["recording"]["clips_failed"] >= 1 and row["recording"]["last_clip"]["state"] == "failed"
        segments = row["segments"]
        wait_until(lambda: listing(env)["yard"]["segments"] >= segments + 4, 60, "the stream stopped", up)
        row = listing(env)["yard"]
        assert row["state"] == "live" and row["latency_p95_s"] < 3.0
        listed = [json.loads(line) for line in run(env, "clips", "list", "--json").stdout.splitlines()]
        assert listed and listed[0]["state"] == "failed"
        get = reelflow("clips", "get", listed[0]["id"], env=env, check=False)
        assert get.returncode == 1 and "failed" in get.stderr and len(get.stderr.splitlines()) == 1
    finally:
        up.stop()
        cam.stop()
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
