"""One live stream, read and classified until stopped: the loop a worker runs per stream.

Two threads. The reader pulls frames (reconnecting as needed), cuts windows and prepares each
clip; ready clips wait in a queue of `max_in_flight`, and when the model falls behind the oldest
waiting clip is dropped and counted, so latency never grows. The sender hands clips to the
model (a few at a time, so that clips of many streams batch together on the replicas), and
publishes each result in order with its smoothed scores and label events.

Only the stream's owner publishes (`StreamRegistry.publish` checks the lease in Redis): a runner
that finds its stream taken over (its worker was cut off from Redis longer than the lease) stops.
Window indices go on from the last one published, whoever published it: an index is never
published twice, and a gap in them is windows that were dropped, failed or not published.

`classify(payload, deadline)` returns something with `.result(timeout_s=...)` (a Ray Serve response,
or an already computed value) whose value is None when the model did not get to the clip before
`deadline` (the window's capture time plus the latency target, `REELFLOW_STREAM_LATENCY_S`);
`prepare(frames)` turns sampled frames into that payload. Windows too late for the target are
dropped and counted, before they are sent or by the model's batcher, when a newer window of the
stream waits: an overloaded stack keeps its latency near the target, and its drops are spread over
its streams (the replica's batcher takes live windows before jobs' clips, from the streams it served
longest ago first). A stream's freshest window is classified unless it would end over half a
target past its deadline (the replica's LATE_SHARE), so a model slower than the target still
serves every stream, at the latency it can. A window that a gap in the stream cut short (the camera
went away mid-window) is classified with the frames it has when the stream comes back; its deadline
counts from then, since it is late by the gap, not by load.

A reader that falls the latency target behind its stream (the machine decodes slower than frames
come) skips to the stream's next keyframe: the frames up to it are read but not decoded, and the
windows the skip cuts into are dropped and counted ("skipped"). A window's `captured_at` is when
its last frame came, not when a late reader got to it: the latency published includes the
reader's lag. Before that, a reader half the target behind decodes its next GOPs without the
deblocking filter (REELFLOW_STREAM_CHEAP_DECODING), a fifth cheaper, counted in `cheap_gops`.
(Skipping on every window dropped late as well was measured, and lost more than it
saved: with a keyframe every 2 s each skip costs two 1.6 s windows, and 24 cameras that kept up
without it no longer did.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.decode_slots import DecodeSlots
from pipelines.errors import one_line
from pipelines.labels import top_labels
from pipelines.live import LiveSource, live_windows, window_phase
from pipelines.models import get_spec
from pipelines.shedding import Shedding
from pipelines.smoothing import LabelEvents, Smoother
from services import metrics
from services.settings import Settings
from services.store.index_outbox import index_row
from services.store.outage import Outage, StoreUnavailable
from services.store.clips import ClipStore
from services.store.streams import StreamRegistry, StreamSpec
from services.worker.recorder import StreamRecorder

log = logging.getLogger("reelflow.streams")

SENT_AT_ONCE = 2  # clips of one stream at the model at a time
STATUS_EVERY_S = 1.0
SINKS_EVERY_S = 10.0  # how soon a change of the stack's global sinks reaches a running stream
_decode_slots: dict[int, DecodeSlots] = {}  # the process's decoding budget, by its size
_slots_lock = threading.Lock()


def decode_slots(threads: int) -> DecodeSlots:
    """The semaphore the streams of this process decode under (REELFLOW_STREAM_DECODE_THREADS)."""
    # one fewer than the cores the replica counts (os.cpu_count: macOS too), but never one: a single
    # slot serializes every reader's decoding (340x256 on 2 cores: 24 cameras dropped 28-35 windows,
    # readers skipping, with 1 slot; none with 2)
    size = threads or max(2, (os.cpu_count() or 1) - 1)
    with _slots_lock:
        return _decode_slots.setdefault(size, DecodeSlots(size))


_shedding: dict[float, Shedding] = {}  # the process's load shedding, by latency target


def shedding(lag_s: float) -> Shedding:
    """The load shedding the streams of this process share (pipelines.shedding.Shedding; REELFLOW_STREAM_SHED)."""
    with _slots_lock:
        return _shedding.setdefault(lag_s, Shedding(lag_s))


@dataclass
class Done:
    """A result computed already (the in-process model), shaped like a pending Serve response."""

    value: tuple

    def result(self, timeout_s: float | None = None) -> tuple:
        return self.value


class StreamRunner:
    def __init__(self, spec: StreamSpec, registry: StreamRegistry, owner: str, labels: list[str], weights_id: str,
                 prepare: Callable[[np.ndarray], object], classify: Callable[[object], object],
                 open_options: dict[str, str] | None = None):
        self.spec, self.registry, self.owner = spec, registry, owner
        self.labels, self.weights_id = labels, weights_id
        self.prepare, self.classify = prepare, classify
        self.model = get_spec(spec.model)
        settings = Settings.from_env()
        self.recorder = StreamRecorder(spec, ClipStore(registry.r), settings, labels,  # evidence clips
                                       window_s=self.model.clip_seconds)
        self.latency_s = settings.stream_latency_s
        # a reader the latency target behind its stream skips to the next keyframe
        self.source = LiveSource(spec.url, transport=spec.transport, options=open_options, ring=self.recorder.ring,
                                 max_lag_s=self.latency_s,
                                 cheap_lag_s=self.latency_s / 2 if settings.stream_cheap_decoding else None,
                                 decode_slots=decode_slots(settings.stream_decode_threads),
                                 shedding=shedding(self.latency_s) if settings.stream_shed else None)
        self.stop = threading.Event()
        self.ready: deque = deque()
        self.cond = threading.Condition()
        self.dropped = self.failed = self.published = self.unpublished = 0
        self.drop_reasons: dict[str, int] = {}  # why windows were dropped: behind, late, late at the model
        self.outage = Outage.of_process()
        self.last_index: int | None = None
        self.first_index = 0  # this runner's window 0 is the stream's window `first_index`
        self.lost = False  # another worker owns the stream now
        self.latencies: deque[float] = deque(maxlen=200)
        self.smoother = Smoother(spec.smoothing)
        self.events = LabelEvents(spec.enter, spec.exit)
        self.sinks: list[str] = []  # ids of the sinks its windows and events go to (re-read every SINKS_EVERY_S)
        self.sinks_read_at = 0.0
        self.sink_backlog = settings.sink_backlog
        self.index_backlog = settings.index_backlog if settings.index and spec.index else 0  # 0: not indexed
        self.counted: dict[str, int] = {}  # the source's counters as last put into the metrics

    def run(self) -> None:
        """Until `stop` is set. Never raises for the stream's own troubles: they are counted."""
        self.first_index = self._next_index()
        reader = threading.Thread(target=self._read, daemon=True, name=f"reelflow-read-{self.spec.name}")
        reader.start()
        try:
            self._send_and_publish()
        finally:
            self.stop.set()
            reader.join(timeout=15)
            self.recorder.close()
            self._write_status()

    def _next_index(self) -> int:
        while not self.stop.is_set():
            try:
                index = self.registry.next_index(self.spec.name)
                self._read_sinks()
                self.outage.recovered()
                return index
            except StoreUnavailable as e:
                self.stop.wait(self.outage.failed(e))
        return 0

    # -- reader thread --

    def _read(self) -> None:
        try:
            frames = self.source.frames(self.stop)
            stride = self.spec.stride_s or self.model.clip_seconds  # windows start at the stream's own phase
            windows = live_windows(frames, self.model.clip_seconds, self.model.num_frames, stride,
                                   offset_s=window_phase(self.spec.name, stride),
                                   on_skipped=lambda n: self._drop("skipped", n),  # counted when the skip ends
                                   on_next=self.source.wanted_from)  # (GOPs between windows: not decoded)
            for clip in windows:
                payload = self.prepare(clip.frames)
                with self.cond:
                    if len(self.ready) >= self.spec.max_in_flight:
                        self.ready.popleft()  # the model is behind: drop the oldest, keep latency flat
                        self._drop("behind")
                    self.ready.append((clip, payload))
                    self.cond.notify()
        except Exception:  # a bug, not the stream: say so, and let the worker restart the stream
            log.exception("stream %s: reader failed", self.spec.name)
            self.stop.set()

    # -- sender (the calling thread) --

    def _send_and_publish(self) -> None:
        sent: deque = deque()
        next_status = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= next_status:
                self._write_status()
                next_status = time.monotonic() + STATUS_EVERY_S
            with self.cond:
                while self.ready and len(sent) < SENT_AT_ONCE:
                    clip, payload = self.ready.popleft()
                    # a window cut short by a gap is late by the gap, not by load: its time counts from now
                    deadline = (time.time() if clip.cut else clip.captured_at) + self.latency_s
                    if time.time() > deadline and self.ready:  # too late, and a newer window waits
                        self._drop("late")
                        continue
                    sent.append((clip, self.classify(payload, deadline)))  # Ray: with the stream's name
                if not sent:
                    self.cond.wait(0.2)
                    continue
            clip, response = sent[0]
            try:
                output = response.result(timeout_s=0.2)
            except TimeoutError:
                continue
            except Exception as e:  # a replica died mid-request: that clip is lost, counted; Serve replaces it
                sent.popleft()
                self.failed += 1
                log.warning("stream %s: segment %d not classified: %s", self.spec.name, clip.index,
                            one_line(e, limit=200))
                continue
            sent.popleft()
            if output is None:  # the model's batcher found it past its deadline
                self._drop("late at the model")
                continue
            self._publish(clip, np.asarray(output[0]), np.asarray(output[1]) if len(output) > 1 else None)

    def _drop(self, reason: str, count: int = 1) -> None:
        self.dropped += count
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + count
        metrics.inc("reelflow_stream_dropped_total", count, stream=self.spec.name)

    def _publish(self, clip, probs: np.ndarray, embedding: np.ndarray | None = None) -> None:
        topk = min(self.spec.topk, len(self.labels))
        index = self.first_index + clip.index  # numbered on from the stream's last published window
        shift = self.first_index * (self.spec.stride_s or self.model.clip_seconds)
        smoothed = self.smoother.add(probs)
        events = [{**e, "label": self.labels[e["label"]], "stream": self.spec.name, "at": time.time()}
                  for e in self.events.update(smoothed, index)]
        self.recorder.on_events(events, clip.start_s, clip.captured_at, clip.end_s, shift)  # clips they start
        events += self.recorder.poll()  # clips written since the last window: ready or failed
        labels, scores = top_labels(probs, self.labels, topk, decimals=6)
        smoothed_labels, smoothed_scores = top_labels(smoothed, self.labels, topk, decimals=6)
        result = {
            "stream": self.spec.name, "index": index, "start_s": round(clip.start_s + shift, 6),
            "end_s": round(clip.end_s + shift, 6), "worker": self.owner,
            "frames": clip.frame_count, "labels": labels, "scores": scores,
            "smoothed": {"labels": smoothed_labels, "scores": smoothed_scores},
            "model": self.spec.model, "weights": self.weights_id, "captured_at": clip.captured_at,
        }
        result["published_at"] = time.time()
        try:
            owned = self.registry.publish(self.spec.name, self.owner, result, events, self.sinks, self.sink_backlog,
                                          index=self._index_row(result, embedding))
        except StoreUnavailable as e:  # Redis away: this window is lost, counted, and the stream goes on
            self.unpublished += 1
            self.outage.failed(e)
            return
        self.outage.recovered()
        if not owned:  # taken over while this worker could not renew its lease: stop, publish nothing more
            log.warning("stream %s: another worker owns it now; stopping it here", self.spec.name)
            self.unpublished += 1
            self.lost = True
            self.stop.set()
            return
        self.latencies.append(result["published_at"] - clip.captured_at)
        self.published += 1
        metrics.inc("reelflow_stream_windows_total", stream=self.spec.name)
        metrics.observe("reelflow_stream_latency_seconds", result["published_at"] - clip.captured_at,
                        stream=self.spec.name)
        self.last_index = index

    def _index_row(self, result: dict, embedding: np.ndarray | None) -> tuple[dict, np.ndarray, int] | None:
        """The window's row for the vector index, its embedding and the outbox's limit; None: not indexed."""
        if not self.index_backlog or embedding is None:
            return None
        row = index_row("stream", self.spec.name, self.spec.url, result, self.spec.model, self.weights_id,
                        result["captured_at"])
        return row, embedding, self.index_backlog

    def status(self) -> dict:
        latencies = sorted(self.latencies)
        percentile = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 4)
                      ) if latencies else (lambda q: None)
        stats = self.source.stats
        return {"state": "stopped" if self.stop.is_set() else stats.state, "owner": self.owner,
                "reconnects": stats.reconnects, "gaps": stats.gaps, "last_error": stats.last_error,
                "transport": stats.transport,
                # decoding: frames decoded, frames read but left undecoded (behind: skips; shed GOPs)
                "frames": stats.frames, "skipped_frames": stats.skipped, "behind": stats.behind, "shed": stats.shed,
                "cheap_gops": stats.cheap,  # decoded without the deblocking filter (the reader was behind)
                "unwanted_frames": stats.unwanted,  # left undecoded: GOPs between windows (a stride over the clip)
                "shed_share": None if self.source.shedding is None else round(self.source.shedding.share, 3),
                "dropped": self.dropped, "drop_reasons": dict(self.drop_reasons), "failed": self.failed, "unpublished": self.unpublished,
                "segments": self.published,
                "last_index": self.last_index, "last_frame_at": stats.last_frame_at,
                "latency_p50_s": percentile(0.5), "latency_p95_s": percentile(0.95),
                "recording": self.recorder.status(), "updated_at": time.time()}

    def _read_sinks(self) -> None:
        """The global sinks (REELFLOW_SINKS of the stack) and the stream's own."""
        self.sinks = self.registry.sink_targets(self.spec.sinks)
        self.sinks_read_at = time.monotonic()
        spec = self.registry.spec(self.spec.name)  # recording rules changed by the API or `streams record`
        if spec is not None and _rules(spec) != _rules(self.spec):
            self.spec = self.spec.model_copy(update=dict(zip(("record", "pre_s", "post_s", "max_clip_s"), _rules(spec))))
            self.recorder.apply(self.spec)

    def _count_source(self) -> None:
        """The source's counters since the last call, into the metrics."""
        stats, name = self.source.stats, self.spec.name
        for metric, now in (("reelflow_stream_frames_total", stats.frames),
                            ("reelflow_stream_cheap_gops_total", stats.cheap),
                            ("reelflow_stream_reconnects_total", stats.reconnects),
                            ("reelflow_stream_gaps_total", stats.gaps)):
            metrics.inc(metric, now - self.counted.get(metric, 0), stream=name)
            self.counted[metric] = now
        metrics.set_gauge("reelflow_stream_up", 1.0 if stats.state == "live" and not self.stop.is_set() else 0.0,
                          stream=name)

    def _write_status(self) -> None:
        self._count_source()
        try:
            if time.monotonic() - self.sinks_read_at > SINKS_EVERY_S:
                self._read_sinks()
            self.registry.set_status(self.spec.name, self.owner, self.status())
        except StoreUnavailable as e:  # Redis away: the next status write catches up
            self.outage.failed(e)


def _rules(spec: StreamSpec) -> tuple:
    return spec.record, spec.pre_s, spec.post_s, spec.max_clip_s


class ThreadHandle:
    """A runner on a thread of this process (the in-process pipeline)."""

    def __init__(self, runner: StreamRunner):
        self.runner = runner
        self.thread = threading.Thread(target=runner.run, daemon=True, name=f"reelflow-stream-{runner.spec.name}")
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(timeout=20)
