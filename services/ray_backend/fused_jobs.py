"""Whole jobs on a model replica (the `fused` pipeline): decode, sample and transform on a thread of
the replica, batch the clips with everything else the replica is given, stream the results back.

On CPU machines this is the efficient shape: clips never leave the process that decoded them (no
serialization, no object store, no second process competing for the cores), and the replica's
forward pass runs while its decoding thread reads on. The `split` pipeline (decoder actors sending
clips to replicas) suits replicas on GPUs fed by CPU nodes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from pipelines.sources import SourcePolicy
from services.ray_backend.in_flight import in_order
from services.ray_backend.job_plan import JobPlan

_END = object()


async def job_results(replica, spec_json: str, skip: list[int], sources: SourcePolicy, threads: int):
    """The job's segment count, then its results in order. A thread decodes and sends clips to the
    replica's batcher (`in_order`); this coroutine hands its results to Serve as they come."""
    from pipelines.transforms import preprocess_clip  # torch: the replica has loaded it already

    loop = asyncio.get_running_loop()
    plan = await loop.run_in_executor(
        None, JobPlan.open, spec_json, sources, replica.clip_model.num_classes, replica.clip_model.weights_id,
        replica.clip_model.classes)
    yield plan.total

    in_flight = 2 * replica.batch_size  # per job: with REELFLOW_JOBS_PER_DECODER (4) jobs, 8 batches in all
    ready: asyncio.Queue = asyncio.Queue(maxsize=in_flight)
    stop = threading.Event()

    def put(item) -> None:  # from the thread; gives up when the job has gone
        future = asyncio.run_coroutine_threadsafe(ready.put(item), loop)
        while not stop.is_set():
            try:
                return future.result(timeout=1)
            except concurrent.futures.TimeoutError:  # the job is slow to read its results: wait on
                continue
        future.cancel()

    def send(clip):  # on the thread: FFmpeg and the transforms release the GIL
        if clip.frames is None:
            return None
        model_input = plan.transform(clip, lambda frames: preprocess_clip(frames, plan.model))
        return asyncio.run_coroutine_threadsafe(replica.predict(model_input, plan.batch_parent(clip)), loop)

    def decode() -> None:
        try:
            for clip, output in in_order(plan.clips(set(skip), threads), send, in_flight):
                if stop.is_set():
                    return
                put(plan.result(clip, output))
            put(_END)
        except BaseException as e:  # handed to the job: a bad video fails it with its own message
            if not stop.is_set():
                put(e)

    thread = threading.Thread(target=decode, daemon=True, name=f"reelflow-decode-{plan.spec.source[-40:]}")
    thread.start()
    try:
        while (item := await ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the job ended, failed or was cancelled: let the decoding thread go
        stop.set()
        while not ready.empty():
            ready.get_nowait()

