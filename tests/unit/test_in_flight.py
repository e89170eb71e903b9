"""The one ordered in-flight loop (decoder actors and fused replicas): answers in the items' order,
never more than `in_flight` unanswered, and what is pending cancelled when the caller stops."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from services.ray_backend.in_flight import in_order


def test_answers_come_in_order_with_a_bounded_number_in_flight():
    pending = []
    peak = 0
    lock = threading.Lock()

    def send(item):
        nonlocal peak
        if item % 5 == 0:
            return None  # a segment with no frames: the model never sees it
        future = Future()
        with lock:
            pending.append((item, future))
            peak = max(peak, sum(not f.done() for _, f in pending))
        threading.Timer(0.001 * (10 - item % 10), future.set_result, (item * item,)).start()  # later items answer first
        return future

    results = list(in_order(range(30), send, in_flight=4))
    assert [item for item, _ in results] == list(range(30))
    assert [answer for _, answer in results] == [None if i % 5 == 0 else i * i for i in range(30)]
    assert peak <= 5  # in_flight, plus the one just sent


def test_stopping_early_cancels_what_is_pending():
    sent: list[Future] = []

    def send(item):
        future = Future()
        sent.append(future)
        if item == 0:
            future.set_result("first")
        return future

    loop = in_order(range(100), send, in_flight=3)
    assert next(loop) == (0, "first")
    loop.close()  # the job was cancelled
    assert len(sent) == 4 and all(f.cancelled() for f in sent[1:])


def test_an_error_reaches_the_caller_in_its_place():
    with ThreadPoolExecutor(2) as pool:
        def send(item):
            return pool.submit(lambda: 1 / (item - 2))

        loop = in_order(range(5), send, in_flight=2)
        assert next(loop)[0] == 0 and next(loop)[0] == 1
        try:
            next(loop)
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("the failed item's error did not surface")
