"""The one ordered in-flight loop, shared by the decoder actors and the fused replicas: send each clip
to the model as soon as it is decoded, keep a few unanswered at once (so the replica's batches
fill while decoding goes on), and hand the answers back in the clips' order.

    >>> for clip, output in in_order(clips, send=lambda c: handle.remote(c.frames), in_flight=8):  # doctest: +SKIP
    ...     publish(clip, output)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

Item = TypeVar("Item")


class Answer(Protocol):
    """What `send` returns: a Serve response or a concurrent future."""

    def result(self): ...

    def cancel(self): ...


def in_order(items: Iterable[Item], send: Callable[[Item], Answer | None], in_flight: int
             ) -> Iterator[tuple[Item, object | None]]:
    """(item, its answer's result) for each item, in order; `send` returns None for an item the model
    need not see (a segment with no frames). When the caller stops early (the job ended, failed or was
    cancelled), the answers still pending are cancelled."""
    pending: deque[tuple[Item, Answer | None]] = deque()
    try:
        for item in items:
            pending.append((item, send(item)))
            while len(pending) > in_flight:
                yield _resolved(*pending.popleft())
        while pending:
            yield _resolved(*pending.popleft())
    finally:
        for _, answer in pending:
            if answer is not None:
                answer.cancel()


def _resolved(item, answer: Answer | None) -> tuple:
    return item, None if answer is None else answer.result()
