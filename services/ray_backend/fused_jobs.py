"""Whole jobs on a model replica (the `fused` pipeline): decode, sample and transform on a thread of
the replica, batch the clips with everything else the replica is given, stream the results back.

On CPU machines this is the efficient shape: clips never leave the process that decoded them (no
serialization, no object store, no second process competing for the cores), and the replica's
forward pass runs while its decoding thread reads on. The `split` pipeline (decoder actors sending
clips to replicas) suits replicas on GPUs fed by CPU nodes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from pipelines.sources import SourcePolicy
from services.job_plan import JobPlan

_END = object()


async def job_results(replica, spec_json: str, skip: list[int], sources: SourcePolicy, threads: int):
    from pipelines.transforms import preprocess_clip

    loop = asyncio.get_running_loop()
    plan = await loop.run_in_executor(
        None, JobPlan.open, spec_json, sources, replica.clip_model.num_classes, replica.clip_model.weights_id,
        replica.clip_model.classes)
    yield plan.total

    in_flight = 2 * replica.batch_size  # per job: with REELFLOW_JOBS_PER_DECODER (4) jobs, 8 batches in all
    ready: asyncio.Queue = asyncio.Queue(maxsize=in_flight)
    stop = threading.Event()

    def decode() -> None:  # on its own thread: FFmpeg and the transforms release the GIL
        def put(item) -> None:
            asyncio.run_coroutine_threadsafe(ready.put(item), loop).result()

        try:
            for clip in plan.clips(set(skip), threads):
                if stop.is_set():
                    return
                put((clip, None if clip.frames is None else preprocess_clip(clip.frames, plan.model)))
            put(_END)
        except Exception as e:  # handed to the job: a bad video fails it with its own message
            if not stop.is_set():
                put(e)

    thread = threading.Thread(target=decode, daemon=True, name=f"reelflow-decode-{plan.spec.source[-40:]}")
    thread.start()
    pending: deque = deque()

    async def result(clip, forward) -> dict:
        return plan.result(clip, None if forward is None else await forward)

    try:
        while (item := await ready.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            clip, tensor = item
            pending.append((clip, None if tensor is None else asyncio.ensure_future(replica.predict(tensor))))
            while len(pending) > in_flight:
                yield await result(*pending.popleft())
        while pending:
            yield await result(*pending.popleft())
    finally:  # the job ended, failed or was cancelled: let the decoding thread go
        stop.set()
        while not ready.empty():
            ready.get_nowait()
        for _, forward in pending:
            if forward is not None:
                forward.cancel()
