"""A process's decoding budget, shared by its live readers: at most `size` of them decode at once.

Decoding many cameras would otherwise take every core from the model (dozens of reader threads
against its few): windows would reach it late and be dropped after being decoded. Held to a
budget, readers that cannot keep up fall behind and skip to a keyframe instead.

    >>> slots = DecodeSlots(2)
    >>> turn = Turn(slots)              # one per reader
    >>> frames = turn.decode(decoder, packet, behind=False)  # doctest: +SKIP
    >>> turn.release()                  # before the reader stops, or waits

Slots go to the longest waiting reader (first come, first served): with dozens of readers behind,
a plain semaphore let the reader that just gave its slot back take it again, and some readers got
almost none. Handing a slot over costs a thread wake-up (about a third of a slot's time when
readers took turns per packet, ~1.2 ms of 640x360 decoding), so a reader that is behind keeps its
slot for a quantum of decoding in a row, its next packets being there already; one that keeps up
gives it back after each packet (its next packet is still to come). (A camera that stops sending
while its reader is behind leaves that reader holding its slot until the read times out, 5 s at
most: the connection's end gives it back.) Measured with 40 threads
decoding a 640x360 file on 2 cores, 2 slots (benchmarks/streams.md): a plain semaphore per packet
912 frames/s at 1.32 cores; first come, first served per packet 819; first come, first served
with a 20 ms quantum 1399 at 1.73 cores, every thread within 489-576 frames of 15 s.
"""

from __future__ import annotations

import threading
import time
from collections import deque

QUANTUM_S = 0.02  # decoding a reader that is behind does in a row before the next one's turn


class DecodeSlots:
    """At most `size` holders at once; a slot given back goes to the longest waiting reader."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"decode slots must be at least 1, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._free = size
        self._waiters: deque[threading.Lock] = deque()  # each held until its reader is handed a slot

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by `release`, which hands this reader its slot

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()  # handed over: the free count stays
            else:
                self._free += 1

    @property
    def free(self) -> int:
        """Slots nobody holds (for tests and status)."""
        return self._free

    def __enter__(self) -> DecodeSlots:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Turn:
    """One reader's use of the slots: it decodes under a slot, and keeps the slot between packets
    while it is behind, for up to `quantum_s` in a row."""

    def __init__(self, slots: DecodeSlots | None, quantum_s: float = QUANTUM_S):
        self.slots, self.quantum_s = slots, quantum_s
        self._since: float | None = None  # when this reader took the slot it holds

    def decode(self, decoder, packet, behind: bool) -> list:
        """`decoder.decode(packet)` under a slot; `behind`: the reader's next packet is there already."""
        if self.slots is None:
            return decoder.decode(packet)
        if self._since is None:
            self.slots.acquire()
            self._since = time.monotonic()
        try:
            return decoder.decode(packet)
        finally:
            if not behind or time.monotonic() - self._since >= self.quantum_s:
                self.release()

    def release(self) -> None:
        """Give the slot back, if held (before the reader waits for anything, or stops)."""
        if self._since is not None:
            self._since = None
            self.slots.release()
