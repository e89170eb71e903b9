"""The job consumer: claim jobs, have a pipeline classify them, store each segment once.

A pipeline turns a job into its segment results: `InProcessPipeline` runs the data plane in this
process; `services.ray_pipeline.RayPipeline` spreads it over Ray decoder actors and Serve model
replicas. The worker owns everything else: it takes only as many jobs as the pipeline has capacity
for, renews their leases from a heartbeat thread, stores results idempotently, resumes reclaimed
jobs after their stored segments, and sorts failures: a bad job (unreadable, not a video, unknown
weights) fails at once into the dead-letter list, anything else is retried with backoff.

    >>> worker = Worker(queue, InProcessPipeline(), consumer="laptop-1")      # doctest: +SKIP
    >>> worker.run()                                                          # until worker.stop is set
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from pipelines.errors import ReelflowError
from pipelines.sources import SourcePolicy
from services import telemetry
from services.jobs import JobSpec, JobState
from services.queue import Claim, JobQueue

log = logging.getLogger("reelflow.worker")

MAX_LOADED_MODELS = 2  # (model, weights) pairs an in-process pipeline keeps in memory
STOP_GRACE_S = 20.0  # how long a stopping worker waits for its jobs to hand themselves back


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InProcessPipeline:
    """The data plane in this process, one job at a time."""

    capacity = 1

    def __init__(self, device: str = "cpu", sources: SourcePolicy | None = None):
        self.device = device
        self.sources = sources or SourcePolicy()
        self._classifiers: OrderedDict = OrderedDict()

    def prepare(self, model: str, weights: str) -> None:
        self._classifier(model, weights)

    def segments(self, spec: JobSpec, skip: set[int]) -> Iterator[int | dict]:
        """The job's number of segments, then a result dict per segment not in `skip`."""
        from pipelines.sources import open_checked

        clf = self._classifier(spec.model, spec.weights)
        clf.topk = min(spec.topk, len(clf.labels))
        source, options, total = open_checked(spec.source, self.sources, clf.spec.clip_seconds, spec.stride_s)
        yield total
        for seg in clf.iter_video(source, spec.stride_s, skip=skip, open_options=options, limits=self.sources):
            yield seg.to_dict(embedding="base64" if spec.embeddings else None)

    def is_permanent(self, error: BaseException) -> bool:
        return isinstance(error, ReelflowError)

    def start_stream(self, spec, redis_url: str, owner: str):
        """Run a live stream on a thread of this process, with this process's model."""
        import redis

        from pipelines.transforms import preprocess_clip
        from services.stream_registry import StreamRegistry
        from services.stream_runner import Done, StreamRunner, ThreadHandle

        policy = self.sources.for_streams()
        url = policy.check(spec.url)
        clf = self._classifier(spec.model, spec.weights)

        def classify(clip):
            probs, features = clf.clip_model.predict(clip[None])
            return Done((probs[0].numpy(), features[0].numpy()))

        runner = StreamRunner(spec, StreamRegistry(redis.Redis.from_url(redis_url)), owner, clf.labels,
                              clf.clip_model.weights_id, prepare=lambda frames: preprocess_clip(frames, clf.spec),
                              classify=classify, open_options=policy.ffmpeg_options(url))
        return ThreadHandle(runner)

    def describe(self) -> list[dict]:
        """The models loaded here: one replica each, in this process."""
        return [{"model": m, "weights": w, "replicas": 1, "serving": f"in-process:{os.getpid()}"}
                for m, w in list(self._classifiers)]

    def _classifier(self, model: str, weights: str):
        from pipelines.classifier import ActionClassifier

        key = (model, weights)
        if key not in self._classifiers:
            self.sources.check_model(model)
            self._classifiers[key] = ActionClassifier(model, weights=weights, device=self.device)
            while len(self._classifiers) > MAX_LOADED_MODELS:
                self._classifiers.popitem(last=False)
        self._classifiers.move_to_end(key)
        return self._classifiers[key]


class Worker:
    def __init__(self, queue: JobQueue, pipeline=None, consumer: str | None = None):
        telemetry.setup("reelflow-worker")
        self.queue = queue
        self.pipeline = pipeline or InProcessPipeline()
        self.consumer = consumer or default_consumer_name()
        self.stop = threading.Event()  # set: hand the jobs in hand back and take no more
        self._job_ended = threading.Event()

    def run(self, block_ms: int = 1000, until_idle: bool = False) -> int:
        """Take jobs, at most the pipeline's (current) capacity at once, until `stop` is set (or, with
        `until_idle`, until no job is waiting, running or due for a retry). Returns how many were taken.

        Stopping waits `STOP_GRACE_S` for the jobs in hand to hand themselves back; one stuck in a
        call that does not return (a dead Ray node, say) is left behind: this worker retires, so
        other workers take its job at once."""
        taken = 0
        running: set[threading.Thread] = set()
        with _Presence(self.queue, self.consumer, self.pipeline):
            while not self.stop.is_set():
                running = {t for t in running if t.is_alive()}
                capacity = self.pipeline.capacity  # grows and shrinks with the model replicas
                if len(running) >= capacity:
                    self._job_ended.wait(block_ms / 1000)
                    self._job_ended.clear()
                    continue
                claims = self.queue.claim(count=capacity - len(running), block_ms=block_ms, consumer=self.consumer)
                if until_idle and not claims and not running and not any(self.queue.depth().values()):
                    break
                for claim in claims:
                    thread = threading.Thread(target=self._run_job, args=(claim,), daemon=True,
                                              name=f"reelflow-job-{claim.job_id}")
                    thread.start()
                    running.add(thread)
                    taken += 1
            deadline = time.monotonic() + (STOP_GRACE_S if self.stop.is_set() else float("inf"))
            for thread in running:
                thread.join(max(0.0, deadline - time.monotonic()))
            if stuck := [t.name for t in running if t.is_alive()]:
                log.warning("%s did not stop within %.0f s; leaving them to other workers", ", ".join(stuck),
                            STOP_GRACE_S)
        return taken

    def _run_job(self, claim: Claim) -> None:
        try:
            self.process(claim)
        except Exception:  # process() sorts the job's own errors; this is Redis gone mid-job
            log.exception("job %s: not finished (its claim returns to the queue)", claim.job_id)
        finally:
            self._job_ended.set()

    def run_until_idle(self, block_ms: int = 200) -> int:
        return self.run(block_ms=block_ms, until_idle=True)

    def process(self, claim: Claim) -> None:
        attributes = {"reelflow.job_id": claim.job_id, "reelflow.model": claim.spec.model,
                      "reelflow.attempt": claim.attempt}
        with telemetry.tracer().start_as_current_span("reelflow.job", context=telemetry.context_from(claim.spec.trace),
                                                      attributes=attributes):
            self._process(claim)

    def _process(self, claim: Claim) -> None:
        job_id, spec = claim.job_id, claim.spec
        log.info("job %s: %s with %s (attempt %d)", job_id, spec.source, spec.model, claim.attempt)
        heartbeat = _Heartbeat(self.queue, claim)
        results = self.pipeline.segments(spec, self.queue.stored_indices(job_id))
        try:
            self.queue.set_total(job_id, next(results))
            for result in results:
                if self.stop.is_set():
                    log.info("job %s: worker stopping; handing the job back", job_id)
                    self.queue.release(claim)
                    return
                if heartbeat.lost.is_set() or self.queue.state(job_id) != JobState.RUNNING:
                    log.info("job %s: cancelled or reclaimed elsewhere; stopping", job_id)
                    return
                result["job_id"] = job_id
                with telemetry.tracer().start_as_current_span("reelflow.publish",
                                                              attributes={"reelflow.segment": result["index"]}):
                    self.queue.store_segment(job_id, result["index"], json.dumps(result))
            if not self.queue.complete(claim):
                self.queue.retry(claim, "not every segment was stored")
        except Exception as e:
            if self.pipeline.is_permanent(e):
                log.warning("job %s failed: %s", job_id, _one_line(e))
                self.queue.fail(claim, _one_line(e))
            else:  # transient until proven otherwise: retried with backoff, then dead-lettered
                log.exception("job %s: transient error", job_id)
                self.queue.retry(claim, f"{type(e).__name__}: {_one_line(e)}")
        finally:
            results.close()
            heartbeat.stop()


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None)  # Ray wraps an actor's exception; report the original
    text = str(cause if isinstance(cause, BaseException) else error).strip()
    return text.splitlines()[0][:500] if text else type(error).__name__


class _Heartbeat:
    """Renews a claim's lease every third of the lease; sets `lost` when renewal is refused."""

    def __init__(self, queue: JobQueue, claim: Claim):
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(queue, claim), daemon=True, name="reelflow-lease")
        self._thread.start()

    def _beat(self, queue: JobQueue, claim: Claim) -> None:
        while not self._stop.wait(queue.settings.lease_s / 3):
            try:
                if not queue.renew(claim):
                    self.lost.set()
                    return
            except Exception:  # Redis briefly unreachable: try again next beat
                log.warning("lease renewal of job %s failed; retrying", claim.job_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Presence:
    """Tells Redis, every few seconds, that this worker is alive and what it serves. When the
    worker dies its presence expires, and other workers take its jobs at once (not after the lease)."""

    EVERY_S = 2.0
    TTL_S = 10.0

    def __init__(self, queue: JobQueue, consumer: str, pipeline):
        self.queue, self.consumer, self.pipeline = queue, consumer, pipeline
        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
                     "pipeline": type(pipeline).__name__}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="reelflow-presence")

    def __enter__(self):
        self._announce()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.queue.retire(self.consumer)
        except Exception:  # Redis gone: the presence expires by itself
            log.warning("could not retire worker %s", self.consumer, exc_info=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.EVERY_S):
            self._announce()

    def _announce(self) -> None:
        try:
            models = self.pipeline.describe() if hasattr(self.pipeline, "describe") else []
            info = {**self.info, "capacity": self.pipeline.capacity, "models": models}
            self.queue.announce(self.consumer, info, self.TTL_S)
        except Exception:  # Redis briefly unreachable, or Serve busy: next beat
            log.warning("presence of worker %s not announced", self.consumer, exc_info=True)
