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


def test_each_traced_item_gets_its_batchs_forward_pass_as_a_span_under_its_own_parent():
    from opentelemetry import trace

    from support.spans import in_memory_spans

    exporter = in_memory_spans()
    tracer = trace.get_tracer("test")
    jobs = [tracer.start_span(f"job-{i}") for i in range(2)]
    parents = [trace.set_span_in_context(job) for job in jobs]

    def forward(items):
        time.sleep(0.05)
        return list(items)

    async def main():
        batcher = Batcher(forward, max_batch_size=4, lanes=1, model="x3d_xs")
        first = asyncio.ensure_future(batcher.submit("a0", (parents[0], {"reelflow.segment": 0})))
        await asyncio.sleep(0.01)  # "a0" alone in the first batch; the rest pile up behind it
        rest = [batcher.submit("a1", (parents[0], {"reelflow.segment": 1})),
                batcher.submit("b0", (parents[1], {"reelflow.segment": 0})), batcher.submit("untraced")]
        return await asyncio.gather(first, *rest)

    assert run(main()) == ["a0", "a1", "b0", "untraced"]
    spans = [s for s in exporter.get_finished_spans() if s.name == "reelflow.model_batch"]
    found = sorted((s.parent.span_id, s.attributes["reelflow.segment"], s.attributes["reelflow.batch_size"])
                   for s in spans)
    a, b = (job.get_span_context().span_id for job in jobs)
    assert found == sorted([(a, 0, 1), (a, 1, 3), (b, 0, 3)])
    assert all(s.attributes["reelflow.model"] == "x3d_xs" and s.end_time - s.start_time >= 40_000_000 for s in spans)


def busy_forward(ran: list):
    """A forward pass of 0.1 s (the next items wait) that notes what it ran."""
    def forward(items):
        time.sleep(0.1)
        ran.extend(items)
        return [f"done {x}" for x in items]
    return forward


def test_items_still_waiting_at_their_deadline_are_not_run_and_get_none():
    ran = []
    forward = busy_forward(ran)

    async def main():
        batcher = Batcher(forward, max_batch_size=1, lanes=1)
        now = time.time()
        first = asyncio.ensure_future(batcher.submit("first"))
        await asyncio.sleep(0.01)
        late = batcher.submit("late", deadline=now + 0.05)  # passes while "first" runs
        in_time = batcher.submit("in time", deadline=now + 10)
        no_deadline = batcher.submit("no deadline")
        return await asyncio.gather(first, late, in_time, no_deadline), batcher.late

    results, late = run(main())
    assert results == ["done first", None, "done in time", "done no deadline"]
    assert ran == ["first", "in time", "no deadline"] and late == 1


def test_a_late_window_is_dropped_only_when_a_newer_one_of_its_stream_waits():
    """A model slower than the latency target must still serve every stream: a stream's freshest
    window runs late (after those on time), the older ones are dropped."""
    ran = []
    forward = busy_forward(ran)

    async def main():
        batcher = Batcher(forward, max_batch_size=1, lanes=1)
        now = time.time()
        first = asyncio.ensure_future(batcher.submit("first"))
        await asyncio.sleep(0.01)
        a1 = batcher.submit("a1", deadline=now + 0.05, key="a")  # both late once "first" is done
        a2 = batcher.submit("a2", deadline=now + 0.06, key="a")
        b1 = batcher.submit("b1", deadline=now + 10, key="b")
        return await asyncio.gather(first, a1, a2, b1), batcher.late

    results, late = run(main())
    assert results == ["done first", None, "done a2", "done b1"]
    assert ran == ["first", "b1", "a2"] and late == 1


def test_with_late_s_even_a_streams_freshest_window_is_dropped_once_far_past_its_deadline():
    """Under overload latency stays bounded: a freshest window that would end over `late_s` (or one
    pass, when longer) past its deadline is not run; one within that still is."""
    ran = []

    def forward(items):
        time.sleep(0.05)
        ran.extend(items)
        return [f"done {x}" for x in items]

    async def main(late_s, deadline_in):
        batcher = Batcher(forward, max_batch_size=1, lanes=1, late_s=late_s)
        first = asyncio.ensure_future(batcher.submit("first"))  # a pass of 0.05 s: known when it ends
        await asyncio.sleep(0.01)
        return await asyncio.gather(first, batcher.submit("window", deadline=time.time() + deadline_in, key="a"))

    assert run(main(0.3, -1.0)) == ["done first", None] and ran == ["first"]  # 1 s late: over 0.3
    ran.clear()
    assert run(main(0.3, -0.1)) == ["done first", "done window"] and ran == ["first", "window"]
    ran.clear()
    assert run(main(None, -5.0)) == ["done first", "done window"]  # no bound: the freshest always runs


def test_live_items_go_first_and_the_streams_served_longest_ago_first_among_them():
    order = []

    def forward(items):
        time.sleep(0.03)
        order.extend(items)
        return items

    async def main():
        batcher = Batcher(forward, max_batch_size=1, lanes=1)
        far = time.time() + 30
        first = asyncio.ensure_future(batcher.submit("job-0"))
        await asyncio.sleep(0.01)  # the lane is busy: everything below waits together
        waiting = [batcher.submit("job-1")]
        waiting += [batcher.submit(f"a{i}", deadline=far, key="a") for i in range(1, 5)]
        waiting += [batcher.submit(f"b{i}", deadline=far, key="b") for i in range(1, 3)]
        await asyncio.gather(first, *waiting)

    run(main())
    assert order == ["job-0", "a1", "b1", "a2", "b2", "a3", "a4", "job-1"]


def test_no_item_is_lost_when_two_lanes_take_from_the_waiting_list_at_once():
    def forward(items):
        time.sleep(0.02)
        return list(items)

    async def stream(batcher, name):
        got = []
        for i in range(6):
            got.append(await asyncio.wait_for(batcher.submit((name, i), deadline=time.time() + 30, key=name), 5))
            await asyncio.sleep(0.05)
        return got

    async def main():
        batcher = Batcher(forward, max_batch_size=8, lanes=2, wait_s=0.02)
        return await asyncio.gather(*(stream(batcher, f"s{k}") for k in range(4)))

    assert run(main()) == [[(f"s{k}", i) for i in range(6)] for k in range(4)]


def test_with_late_s_a_batch_is_cut_where_its_pass_would_carry_windows_past_late_s():
    """A pass takes longer the more clips it holds: eight late windows in one batch on a slow model
    would all end far past twice the target. The batch stops where a clip's time (as the passes so
    far took) times its size would end over `late_s` past a deadline in it."""
    clip_s, late_s = 0.05, 0.3
    sizes = []

    def forward(items):
        time.sleep(clip_s * len(items))
        sizes.append(len(items))
        return [f"done {x}" for x in items]

    async def ended(awaitable):
        result = await awaitable
        return result, time.time()

    async def main(late_s):
        batcher = Batcher(forward, max_batch_size=8, lanes=1, late_s=late_s)
        await batcher.submit("first")  # a pass of one clip: the batcher learns a clip's time
        busy = asyncio.ensure_future(batcher.submit("job"))  # the lane is busy while the windows come
        await asyncio.sleep(0.01)
        deadline = time.time() + 0.04  # late by the time the lane is free
        windows = await asyncio.gather(*(ended(batcher.submit(f"w{i}", deadline=deadline, key=f"s{i}"))
                                         for i in range(8)))
        await busy
        return windows, deadline

    windows, deadline = run(main(late_s))
    ran = [at for result, at in windows if result is not None]
    assert 1 < sizes[2] < 8, sizes  # "first", "job", then the windows' first batch: cut
    assert ran and max(ran) <= deadline + late_s + 0.15, (sizes, [at - deadline for at in ran])
    assert all(result in (None, f"done w{i}") for i, (result, _) in enumerate(windows))

    sizes.clear()
    windows, deadline = run(main(None))  # no bound: one batch of all eight, however late
    assert sizes[2] == 8 and all(result == f"done w{i}" for i, (result, _) in enumerate(windows))
