"""Evidence clips of one live stream (issue 22): its recording rules, the clips they start, and
where the clips go.

The stream's source feeds a packet ring (pipelines.recording.PacketRing: encoded packets, no
decoding, `pre_s` of them kept while the stream has rules). A label's enter event that a rule
names starts a clip from `pre_s` before the event's window to `post_s` after it; another such
event inside a clip that is still recording extends it, up to `max_clip_s`. A clip is written on a
thread of its own: a slow, full or unwritable disk fails that clip (its `reason` in the clip's
event, its record and `streams list`) and never holds up the stream's windows.

Each clip is a record in Redis (services.store.clips) and two events on the stream: the enter
event carries the clip as `recording`; when it is written, an event `clip` with state `ready` or
`failed` goes out with the stream's next window. Clips live under REELFLOW_CLIPS_DIR/<stream>/;
after each clip, those older than REELFLOW_CLIPS_MAX_AGE_S and, past REELFLOW_CLIPS_MAX_BYTES,
the oldest are deleted (the newest is kept, even when it alone is over the size limit).
"""

from __future__ import annotations

import datetime
import logging
import re
import secrets
import time
from pathlib import Path

from pipelines.recording import ClipWriter, PacketRing, clip_suffix
from services.settings import Settings
from services.store.clips import ClipStore
from services.store.outage import StoreUnavailable

log = logging.getLogger("reelflow.clips")

CLIP_SUFFIXES = (".mp4", ".mkv")


class StreamRecorder:
    def __init__(self, spec, store: ClipStore, settings: Settings, labels: list[str], window_s: float):
        self.name, self.store, self.settings = spec.name, store, settings
        # an event is known when its window is classified: up to a window and the latency target
        # after the window's start, from which the clip reaches `pre_s` back
        self.lag_s = window_s + settings.stream_latency_s + 1.0
        self.model_labels = set(labels)
        self.ring = PacketRing(keep_s=0.0)
        self.writing: list[tuple[ClipWriter, dict]] = []  # clips not yet finished, with their records
        self.finished: list[dict] = []  # `clip` events waiting for the stream's next window
        self.ready = self.failed = 0
        self.last_clip: dict | None = None
        self.rule_error = ""
        self.apply(spec)

    # -- rules --

    def apply(self, spec) -> None:
        """The spec's recording rules (at start, and when the API or `streams record` changes them)."""
        self.record = set(spec.record)
        self.pre_s, self.post_s, self.max_clip_s = spec.pre_s, spec.post_s, spec.max_clip_s
        self.ring.keep(self.pre_s + self.lag_s if self.record else 0.0)
        unknown = sorted(self.record - self.model_labels - {"*"})
        self.rule_error = (f"--record {', '.join(unknown)}: not a label of this model; `reelflow classify` or the "
                           "label list shows its labels" if unknown else "")

    def wants(self, label: str) -> bool:
        return "*" in self.record or label in self.record

    # -- clips --

    def on_events(self, events: list[dict], window_start_s: float, captured_at: float, window_end_s: float,
                  shift_s: float) -> None:
        """A window's label events (source stream time `window_start_s`..`window_end_s`, its last frame
        arrived at `captured_at`); each enter event a rule names gets `clip` (a new clip or the one
        it extends). `shift_s`: published stream time = source stream time + shift_s."""
        for event in events:
            if event["event"] != "enter" or not self.wants(event["label"]):
                continue
            active = next((w for w, _ in self.writing if w.state == "recording"), None)
            if active is not None:  # inside a clip still recording: it goes on longer
                active.extend(window_start_s + self.post_s)
                record = next(r for w, r in self.writing if w is active)
                record["events"].append(event["index"])
            else:
                record = self._start(event, window_start_s, captured_at - (window_end_s - window_start_s), shift_s)
            event["clip"] = _public(record)

    def _start(self, event: dict, at_s: float, at_wall: float, shift_s: float) -> dict:
        stamp = datetime.datetime.fromtimestamp(at_wall, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        clip_id = f"{self.name}-{stamp}-{_slug(event['label'])}-{secrets.token_hex(2)}"
        path = self.settings.clips_location / self.name / f"{clip_id}{clip_suffix(self.ring.codec)}"
        writer = ClipWriter(self.ring, path, at_s - self.pre_s, at_s + self.post_s, self.max_clip_s)
        record = {"id": clip_id, "stream": self.name, "label": event["label"], "event_index": event["index"],
                  "events": [event["index"]], "path": str(path), "state": "recording", "reason": "",
                  "event_s": round(at_s + shift_s, 3), "start_s": round(at_s - self.pre_s + shift_s, 3),
                  "duration_s": round(self.pre_s + self.post_s, 3), "started_at": at_wall - self.pre_s,
                  "mode": self.ring.mode, "bytes": 0, "_shift": shift_s, "_at_wall": at_wall, "_at_s": at_s}
        writer.start()
        self.writing.append((writer, record))
        self._save(record)
        return record

    def poll(self) -> list[dict]:
        """Clips finished since the last call: their records updated, their `clip` events returned
        (to be published with the stream's next window), and the clips directory kept in bounds."""
        done = [(w, r) for w, r in self.writing if w.done.is_set()]
        if not done:
            return self._take_finished()
        self.writing = [(w, r) for w, r in self.writing if not w.done.is_set()]
        for writer, record in done:
            record.update(state=writer.state, reason=writer.reason)
            if writer.first_s is not None:
                record.update(start_s=round(writer.first_s + record["_shift"], 3), duration_s=writer.duration_s,
                              started_at=record["_at_wall"] - (record["_at_s"] - writer.first_s))
            record["bytes"] = writer.path.stat().st_size if writer.state == "ready" and writer.path.exists() else 0
            if writer.state == "ready":
                self.ready += 1
            else:
                self.failed += 1
                log.warning("stream %s: clip %s failed: %s", self.name, record["id"], writer.reason)
            self.last_clip = _public(record)
            self._save(record)
            self.finished.append({"event": "clip", "label": record["label"], "index": record["event_index"],
                                  "stream": self.name, "at": time.time(), "clip": _public(record)})
        self._enforce_retention()
        return self._take_finished()

    def _take_finished(self) -> list[dict]:
        finished, self.finished = self.finished, []
        return finished

    def close(self, timeout_s: float = 5.0) -> None:
        """The stream stops: clips still recording end with what they have."""
        for writer, _ in self.writing:
            writer.cut("the stream stopped")
        deadline = time.monotonic() + timeout_s
        for writer, _ in self.writing:
            writer.wait(max(0.0, deadline - time.monotonic()))
        self.poll()

    def status(self) -> dict:
        """For `streams list`: the rules, the ring's mode and memory, the clips so far, the last one."""
        if not self.record and not self.last_clip:
            return {}
        return {"record": sorted(self.record), "pre_s": self.pre_s, "post_s": self.post_s,
                "mode": self.ring.mode, "mode_note": self.ring.note, "ring_bytes": self.ring.bytes,
                "clips_ready": self.ready, "clips_failed": self.failed,
                "recording_now": sum(w.state == "recording" for w, _ in self.writing),
                "last_clip": self.last_clip, "rule_error": self.rule_error}

    def _save(self, record: dict) -> None:
        try:
            self.store.save(_public(record), keep_s=self.settings.clips_max_age_s + 24 * 3600)
        except StoreUnavailable:
            pass  # Redis away: the clip is on disk; its record is written when it finishes, if Redis is back

    def _enforce_retention(self) -> None:
        """Clips past the age limit go, then the oldest while the directory holds more than the byte limit."""
        root = self.settings.clips_location
        try:
            files = sorted((p.stat().st_mtime, p.stat().st_size, p) for p in root.glob("*/*")
                           if p.suffix in CLIP_SUFFIXES and p.is_file())
        except OSError:
            return
        busy = {w.path for w, _ in self.writing}
        cutoff = time.time() - self.settings.clips_max_age_s
        total = sum(size for _, size, _ in files)
        newest = files[-1][2] if files else None  # the clip just written stays, whatever the size limit
        for mtime, size, path in files:
            if path in busy:
                continue
            if mtime >= cutoff and (total <= self.settings.clips_max_bytes or path == newest):
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "label"
