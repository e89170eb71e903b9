"""The replica's continuous batcher (services/ray_backend/batcher.py), with plain functions as the forward pass."""

import asyncio
import threading
import time

import pytest

from services.ray_backend.batcher import Batcher


def run(coro):
    return asyncio.run(coro)


def test_each_caller_gets_its_own_result_and_busy_lanes_fill_batches():
    def forward(items):
        time.sleep(0.05)  # the model is busy: clips pile up meanwhile
        return [x * 10 for x in items]

    async def main():
        batcher = Batcher(forward, max_batch_size=4, lanes=1)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(13)))
        return results, batcher.batch_sizes

    results, sizes = run(main())
    assert results == [i * 10 for i in range(13)]
    assert sizes[4] >= 2 and max(sizes) == 4 and sum(k * n for k, n in sizes.items()) == 13


def test_lanes_run_forward_passes_at_the_same_time():
    both = threading.Barrier(2, timeout=5)  # passes only when two forward passes run at once

    def forward(items):
        both.wait()
        return [threading.current_thread().name for _ in items]

    async def main(lanes):
        batcher = Batcher(forward, max_batch_size=1, lanes=lanes)
        return await asyncio.gather(batcher.submit(1), batcher.submit(2))

    threads = run(main(2))
    assert len(set(threads)) == 2
    both.reset()
    with pytest.raises(threading.BrokenBarrierError):  # one lane: the second pass waits for the first
        run(asyncio.wait_for(main(1), 20))


def test_an_idle_lane_waits_at_most_wait_s_for_company():
    async def main():
        batcher = Batcher(lambda items: [len(items)] * len(items), max_batch_size=8, lanes=1, wait_s=0.2)
        started = time.perf_counter()
        alone = await batcher.submit("x")
        waited = time.perf_counter() - started
        late = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0.05)
        company = await asyncio.gather(late, batcher.submit("b"))
        return alone, waited, company

    alone, waited, company = run(main())
    assert alone == 1 and 0.15 < waited < 2
    assert company == [2, 2]  # the second clip, 50 ms later, joined the first one's batch


def test_a_failed_pass_fails_its_callers_only_and_the_lane_goes_on():
    def forward(items):
        if "bad" in items:
            raise ValueError("broken clip")
        return items

    async def main():
        batcher = Batcher(forward, max_batch_size=1, lanes=1)
        with pytest.raises(ValueError, match="broken clip"):
            await batcher.submit("bad")
        return await batcher.submit("good")

    assert run(main()) == "good"


def test_a_cancelled_caller_is_left_out_of_its_batch():
    seen, release = [], threading.Event()

    def forward(items):
        seen.extend(items)
        release.wait(10)  # "first" holds the only lane until the test lets it go
        return items

    async def main():
        batcher = Batcher(forward, max_batch_size=4, lanes=1)
        first = asyncio.ensure_future(batcher.submit("first"))
        while not seen:  # "first" is in the model; the next two wait
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit("gone"))
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await asyncio.sleep(0.01)
        gone.cancel()
        release.set()
        return await first, await kept

    assert run(main()) == ("first", "kept")
    assert seen == ["first", "kept"]


def test_warm_runs_once_on_each_lane_thread_before_any_clip_there():
    warmed, order = [], []

    def forward(items):
        order.append(("forward", threading.current_thread().name))
        return items

    def warm():
        time.sleep(0.05)
        warmed.append(threading.current_thread().name)
        order.append(("warm", threading.current_thread().name))

    async def main():
        batcher = Batcher(forward, max_batch_size=1, lanes=3)
        batcher.warm(warm)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)))

    assert run(main()) == [0, 1, 2]
    deadline = time.monotonic() + 10  # the clips may all be done on two warm lanes while the third still warms
    while len(warmed) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(warmed) == 3 and len(set(warmed)) == 3  # every lane's thread, once
    for k, (kind, thread) in enumerate(order):  # no clip ran on a thread before it was warm
        assert kind == "warm" or ("warm", thread) in order[:k]
