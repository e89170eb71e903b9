"""The job consumer: claim a job, classify its video segment by segment, store each segment once.

This worker runs the data plane in its own process (the local, single-machine mode of `reelflow
up`). A bad job (unreadable, not a video, unknown weights) fails at once into the dead-letter
list; anything else is transient and retried with backoff. A reclaimed job resumes after its last
stored segment. A heartbeat thread renews the lease while the job runs; when renewal fails (the
job was cancelled or reclaimed elsewhere) the worker stops that job between two segments.

    >>> worker = Worker(queue, consumer="laptop-1")          # doctest: +SKIP
    >>> worker.run()                                          # until worker.stop is set
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections import OrderedDict

from pipelines.errors import ReelflowError
from services.jobs import JobState
from services.queue import Claim, JobQueue

log = logging.getLogger("reelflow.worker")

MAX_LOADED_MODELS = 2  # (model, weights) pairs kept in memory at once


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, queue: JobQueue, consumer: str | None = None, device: str = "cpu"):
        self.queue = queue
        self.consumer = consumer or default_consumer_name()
        self.device = device
        self.stop = threading.Event()  # set: hand the job in hand back and take no more
        self._classifiers: OrderedDict = OrderedDict()

    def run(self, block_ms: int = 1000) -> None:
        """Take jobs one at a time until `stop` is set."""
        while not self.stop.is_set():
            for claim in self.queue.claim(count=1, block_ms=block_ms, consumer=self.consumer):
                self.process(claim)

    def run_until_idle(self, block_ms: int = 200) -> int:
        """Take jobs until the queue has none ready; returns how many were processed (tests, `process`)."""
        processed = 0
        while claims := self.queue.claim(count=1, block_ms=block_ms, consumer=self.consumer):
            for claim in claims:
                self.process(claim)
                processed += 1
        return processed

    def process(self, claim: Claim) -> None:
        job_id, spec = claim.job_id, claim.spec
        log.info("job %s: %s with %s (attempt %d)", job_id, spec.source, spec.model, claim.attempt)
        heartbeat = _Heartbeat(self.queue, claim)
        try:
            clf = self.classifier(spec.model, spec.weights, spec.topk)
            from pipelines.decode import open_video
            from pipelines.sampler import plan_video

            with open_video(spec.source) as video:
                total = len(plan_video(video, clf.spec.clip_seconds, spec.stride_s))
            self.queue.set_total(job_id, total)
            done = self.queue.stored_indices(job_id)
            for seg in clf.iter_video(spec.source, spec.stride_s, skip=done):
                if self.stop.is_set():
                    log.info("job %s: worker stopping; handing the job back", job_id)
                    self.queue.release(claim)
                    return
                if heartbeat.lost.is_set() or self.queue.state(job_id) != JobState.RUNNING:
                    log.info("job %s: cancelled or reclaimed elsewhere; stopping", job_id)
                    return
                result = seg.to_dict(embedding="base64" if spec.embeddings else None)
                result["job_id"] = job_id
                self.queue.store_segment(job_id, seg.index, json.dumps(result))
            if not self.queue.complete(claim):
                self.queue.retry(claim, "not every segment was stored")
        except ReelflowError as e:
            log.warning("job %s failed: %s", job_id, e)
            self.queue.fail(claim, str(e))
        except Exception as e:  # transient until proven otherwise: retried, then dead-lettered
            log.exception("job %s: transient error", job_id)
            self.queue.retry(claim, f"{type(e).__name__}: {e}")
        finally:
            heartbeat.stop()

    def classifier(self, model: str, weights: str, topk: int):
        from pipelines.classifier import ActionClassifier

        key = (model, weights)
        clf = self._classifiers.get(key)
        if clf is None:
            clf = ActionClassifier(model, weights=weights, topk=topk, device=self.device)
            self._classifiers[key] = clf
            while len(self._classifiers) > MAX_LOADED_MODELS:
                self._classifiers.popitem(last=False)
        self._classifiers.move_to_end(key)
        clf.topk = min(topk, len(clf.labels))
        return clf


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
