"""A stream's recorder (services.worker.recorder) on a real Redis and a file played live: enter
events a rule names start clips, the clips become records and `clip` events, the rules change
while it runs, and retention keeps the clips directory within its age and size (fast: no stack)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from pipelines.live import LiveSource
from pipelines.synthetic import make_video
from services.settings import Settings
from services.store.clips import ClipStore
from services.store.streams import StreamSpec
from services.worker.recorder import StreamRecorder


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("recorder") / "cam.mp4"
    make_video(path, seconds=12.0, fps=25, size=(160, 120), noise=True, gop=25)
    return path


def enter(label: str, index: int) -> dict:
    return {"event": "enter", "label": label, "score": 0.9, "index": index, "stream": "cam", "at": time.time()}


def test_rules_clips_records_events_and_retention(tmp_path, redis_server_url, video):
    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    store = ClipStore(client)
    settings = Settings.from_env(home=tmp_path / "home")
    old = settings.clips_location / "elsewhere" / "old.mp4"  # a clip past the age limit
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - settings.clips_max_age_s - 60,) * 2)
    spec = StreamSpec(name="cam", url=str(video), record=["juggling"], pre_s=1.0, post_s=1.0)
    recorder = StreamRecorder(spec, store, settings, ["juggling", "abseiling"], window_s=1.0)
    assert recorder.rule_error == ""
    source = LiveSource(str(video), ring=recorder.ring)
    stop = threading.Event()
    events, finished = {}, []
    for live in source.frames(stop):
        t = live.time_s
        for at, label, index in ((3.0, "abseiling", 1), (3.2, "juggling", 2), (7.0, "juggling", 3)):
            if t >= at and index not in events:  # the event of a window from at - 0.5 to at + 0.5
                events[index] = [enter(label, index)]
                recorder.on_events(events[index], at - 0.5, time.time() - (t - (at + 0.5)), at + 0.5, shift_s=10.0)
        finished += recorder.poll()
        if len(finished) == 1 and recorder.settings is settings:  # the second clip makes room for itself
            size = os.path.getsize(finished[0]["clip"]["path"])
            recorder.settings = settings.replace(clips_max_bytes=size + 1)
        if t >= 10.0:
            break
    stop.set()
    recorder.close()
    finished += recorder.poll()
    assert "clip" not in events[1][0]  # no rule names it
    first, second = events[2][0]["clip"], events[3][0]["clip"]
    assert first["state"] == second["state"] == "recording" and first["id"] != second["id"]
    assert first["event_s"] == pytest.approx(12.7) and first["path"].endswith(".mp4")  # published time: + shift
    assert [e["clip"]["id"] for e in finished] == [first["id"], second["id"]]
    assert all(e["event"] == "clip" and e["clip"]["state"] == "ready" for e in finished)
    assert 1.9 <= finished[1]["clip"]["duration_s"] <= 3.1
    # records: the latest first; the first clip's file made way for the second (oldest first)
    listed = store.list("cam")
    assert [c["id"] for c in listed] == [second["id"], first["id"]]
    assert listed[0]["state"] == "ready" and listed[1]["state"] == "deleted"
    assert not old.exists() and os.path.exists(second["path"])
    status = recorder.status()
    assert status["clips_ready"] == 2 and status["mode"] == "remux" and status["last_clip"]["id"] == second["id"]
    # new rules: an unknown label is said, `*` takes every label, none keeps no packets
    recorder.apply(spec.model_copy(update={"record": ["jugling"]}))
    assert "jugling" in recorder.rule_error and "not a label" in recorder.rule_error
    recorder.apply(spec.model_copy(update={"record": ["*"]}))
    assert recorder.wants("abseiling") and recorder.rule_error == ""
    recorder.apply(spec.model_copy(update={"record": []}))
    assert recorder.ring.keep_s == 0 and recorder.ring.bytes == 0 and not recorder.ring.held and not recorder.wants("juggling")
