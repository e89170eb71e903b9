"""The job consumer: claim jobs, have a pipeline classify them, store each segment once.

A pipeline (`services.worker.pipeline.Pipeline`) turns a job into its segment results:
`InProcessPipeline` runs the data plane in this process; the Ray backend's spreads it over decoder
actors and Serve model replicas. The worker owns everything else: it takes only as many jobs as the pipeline has capacity
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

from pipelines.errors import one_line
from services import metrics, telemetry
from services.store.jobs import JobState
from services.store.outage import Outage, StoreUnavailable
from services.store.queue import Claim, JobQueue, LeaseLost
from services.worker.pipeline import Pipeline

log = logging.getLogger("reelflow.worker")

STOP_GRACE_S = 20.0  # how long a stopping worker waits for its jobs to hand themselves back


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, queue: JobQueue, pipeline: Pipeline, consumer: str | None = None):
        telemetry.setup("reelflow-worker")
        self.queue = queue
        self.pipeline = pipeline
        self.consumer = consumer or default_consumer_name()
        self.stop = threading.Event()  # set: hand the jobs in hand back and take no more
        self.outage = Outage.of_process()
        self._job_ended = threading.Event()
        self._abandoned = threading.Event()  # set: job threads still running are left behind

    def run(self, block_ms: int = 1000, until_idle: bool = False) -> int:
        """Take jobs, at most the pipeline's (current) capacity at once, until `stop` is set (or, with
        `until_idle`, until no job is waiting, running or due for a retry). Returns how many were taken.

        Stopping waits `STOP_GRACE_S` for the jobs in hand to hand themselves back; one stuck in a
        call that does not return (a dead Ray node, say) is left behind: this worker retires, so
        other workers take its job at once."""
        taken = 0
        running: set[threading.Thread] = set()
        with _Presence(self.queue, self.consumer, self.pipeline, self.outage):
            while not self.stop.is_set():
                running = {t for t in running if t.is_alive()}
                capacity = self.pipeline.capacity  # grows and shrinks with the model replicas
                if len(running) >= capacity:
                    self._job_ended.wait(block_ms / 1000)
                    self._job_ended.clear()
                    continue
                try:
                    claims = self.queue.claim(count=capacity - len(running), block_ms=block_ms,
                                              consumer=self.consumer)
                    idle = until_idle and not claims and not running and not any(self.queue.depth().values())
                except StoreUnavailable as e:  # wait for Redis; the jobs in hand wait for it too
                    self.stop.wait(self.outage.failed(e))
                    continue
                self.outage.recovered()
                if idle:
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
                self._abandoned.set()  # their heartbeats stop: their leases run out, and others take the jobs
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
        heartbeat = _Heartbeat(self.queue, claim, self.outage, self._abandoned)
        results = self.pipeline.segments(spec, self._through_outage(self.queue.stored_indices, job_id))
        try:
            self._through_outage(self.queue.set_total, job_id, next(results))
            for result in results:
                if self.stop.is_set():
                    log.info("job %s: worker stopping; handing the job back", job_id)
                    self.queue.release(claim)
                    return
                if heartbeat.lost.is_set() or self._through_outage(self.queue.state, job_id) != JobState.RUNNING:
                    log.info("job %s: cancelled or reclaimed elsewhere; stopping", job_id)
                    return
                result["job_id"] = job_id
                with telemetry.tracer().start_as_current_span("reelflow.store",
                                                              attributes={"reelflow.segment": result["index"]}):
                    if self._through_outage(self.queue.store_segment, claim, result["index"], json.dumps(result)):
                        metrics.inc("reelflow_segments_stored_total", model=spec.model)
            if self._through_outage(self.queue.complete, claim):
                log.info("job %s: done", job_id)
                self._ended(claim, "done")
            else:
                log.warning("job %s: not every segment was stored; retrying it", job_id)
                self.queue.retry(claim, "not every segment was stored")
                metrics.inc("reelflow_jobs_retried_total", model=spec.model)
        except LeaseLost as e:  # cut off from Redis for longer than the lease: the job is another worker's now
            log.warning("%s; stopping it here (what this worker stored stays, once)", e)
        except Exception as e:
            self._give_up_or_retry(claim, e)
        finally:
            results.close()
            heartbeat.stop()


    def _give_up_or_retry(self, claim: Claim, error: Exception) -> None:
        try:
            if self.pipeline.is_permanent(error):
                log.warning("job %s failed: %s", claim.job_id, one_line(error))
                self.queue.fail(claim, one_line(error))
                self._ended(claim, "failed")
            else:  # transient until proven otherwise: retried with backoff, then dead-lettered
                log.exception("job %s: transient error", claim.job_id)
                state = self.queue.retry(claim, f"{type(error).__name__}: {one_line(error)}")
                if state == JobState.FAILED:
                    self._ended(claim, "failed")
                else:
                    metrics.inc("reelflow_jobs_retried_total", model=claim.spec.model)
        except LeaseLost as lost:
            log.warning("%s; leaving it to that worker", lost)

    def _ended(self, claim: Claim, state: str) -> None:
        metrics.inc("reelflow_jobs_ended_total", model=claim.spec.model, state=state)
        if state == "done":
            try:
                record = self.queue.record(claim.job_id)
            except StoreUnavailable:
                return  # the count is kept; the duration of this one is not
            if record is not None and record.created_at:
                metrics.observe("reelflow_job_duration_seconds", time.time() - record.created_at,
                                model=claim.spec.model)

    def _through_outage(self, call, *args):
        """`call(*args)`, tried again while Redis is away (its lease may run out meanwhile: then the
        heartbeat says so when Redis is back, and the job stops; what was stored stays, once)."""
        while True:
            try:
                value = call(*args)
            except StoreUnavailable as e:
                if self.stop.wait(self.outage.failed(e)):
                    raise
                continue
            self.outage.recovered()
            return value


class _Heartbeat:
    """Renews a claim's lease every third of the lease; sets `lost` when renewal is refused."""

    def __init__(self, queue: JobQueue, claim: Claim, outage: Outage, abandoned: threading.Event):
        self.lost = threading.Event()
        self.outage, self.abandoned = outage, abandoned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(queue, claim), daemon=True, name="reelflow-lease")
        self._thread.start()

    def _beat(self, queue: JobQueue, claim: Claim) -> None:
        while not self._stop.wait(queue.settings.lease_s / 3) and not self.abandoned.is_set():
            try:
                if not queue.renew(claim):
                    self.lost.set()
                    return
            except StoreUnavailable as e:  # Redis away: the worker's outage says so once; try again next beat
                self.outage.failed(e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Presence:
    """Tells Redis, every few seconds, that this worker is alive and what it serves. When the
    worker dies its presence expires, and other workers take its jobs at once (not after the lease)."""

    EVERY_S = 2.0
    TTL_S = 10.0

    def __init__(self, queue: JobQueue, consumer: str, pipeline: Pipeline, outage: Outage):
        self.queue, self.consumer, self.pipeline, self.outage = queue, consumer, pipeline, outage
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
            info = {**self.info, "capacity": self.pipeline.capacity, "models": self.pipeline.describe(),
                    **self.outage.summary()}
            self.queue.announce(self.consumer, info, self.TTL_S)
        except StoreUnavailable as e:  # Redis away: the worker's outage says so once; next beat
            self.outage.failed(e)
        except Exception:  # Serve busy: next beat
            log.warning("presence of worker %s not announced", self.consumer, exc_info=True)
