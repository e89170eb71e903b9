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
from services.jobs import JobSpec

_END = object()


async def job_results(replica, spec_json: str, skip: list[int], sources: SourcePolicy, threads: int):
    from pipelines.classifier import clip_result
    from pipelines.labels import labels_for
    from pipelines.models import get_spec
    from pipelines.sampler import sample_clips
    from pipelines.sources import open_checked
    from pipelines.transforms import preprocess_clip

    spec = JobSpec.model_validate_json(spec_json)
    model = get_spec(spec.model)
    labels = labels_for(replica.clip_model.num_classes)
    topk = min(spec.topk, len(labels))
    weights_id = replica.clip_model.weights_id
    loop = asyncio.get_running_loop()
    source, options, total = await loop.run_in_executor(
        None, open_checked, spec.source, sources, model.clip_seconds, spec.stride_s)
    yield total

    in_flight = 4 * replica.batch_size
    ready: asyncio.Queue = asyncio.Queue(maxsize=in_flight)
    stop = threading.Event()

    def decode() -> None:  # on its own thread: FFmpeg and the transforms release the GIL
        def put(item) -> None:
            asyncio.run_coroutine_threadsafe(ready.put(item), loop).result()

        try:
            for clip in sample_clips(source, model.clip_seconds, model.num_frames, spec.stride_s, skip=set(skip),
                                     open_options=options, threads=threads):
                if stop.is_set():
                    return
                put((clip, None if clip.frames is None else preprocess_clip(clip.frames, model)))
            put(_END)
        except Exception as e:  # handed to the job: a bad video fails it with its own message
            if not stop.is_set():
                put(e)

    thread = threading.Thread(target=decode, daemon=True, name=f"reelflow-decode-{spec.source[-40:]}")
    thread.start()
    pending: deque = deque()

    async def result(clip, forward) -> dict:
        output = None if forward is None else await forward
        return clip_result(spec.source, clip, spec.model, weights_id, labels, topk, output
                           ).to_dict(embedding="base64" if spec.embeddings else None)

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
