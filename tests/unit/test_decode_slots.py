"""The live readers' decode slots: first come, first served; a reader that is behind keeps its slot
for a quantum, one that keeps up gives it back after each packet. Real PyAV decoders on a
generated video."""

from __future__ import annotations

import threading
import time

import av
import pytest

from pipelines.decode_slots import DecodeSlots, Turn
from pipelines.synthetic import make_video


@pytest.fixture(scope="module")
def video(video_dir):
    path = video_dir / "slots_4s.mp4"
    make_video(path, seconds=4.0, fps=25, size=(320, 240))
    return path


def packets(path):
    """A decoder and the video's packets, read ahead (the reader is behind: they are there)."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    return container, stream.codec_context, [p for p in container.demux(stream) if p.size]


def test_a_slot_given_back_goes_to_the_longest_waiting_reader():
    slots, order = DecodeSlots(1), []
    slots.acquire()
    threads = []
    for i in range(4):
        def wait(i=i):
            with slots:
                order.append(i)
        threads.append(threading.Thread(target=wait))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while len(slots._waiters) < i + 1 and time.monotonic() < deadline:  # queued in turn
            time.sleep(0.001)
    slots.release()
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3] and slots.free == 1


def test_a_reader_behind_keeps_its_slot_for_a_quantum_one_keeping_up_gives_it_back(video):
    container, decoder, todo = packets(video)
    with container:
        slots = DecodeSlots(1)
        turn = Turn(slots, quantum_s=60.0)
        turn.decode(decoder, todo[0], behind=True)
        assert slots.free == 0  # kept: its next packet is there
        turn.decode(decoder, todo[1], behind=False)
        assert slots.free == 1  # given back: its next packet is still to come
        turn.decode(decoder, todo[2], behind=True)
        turn.release()
        assert slots.free == 1
        turn = Turn(slots, quantum_s=0.0)  # the quantum used up: given back even when behind
        turn.decode(decoder, todo[3], behind=True)
        assert slots.free == 1


def test_readers_behind_take_turns_on_one_slot(video):
    """Two readers with their packets all there, one slot: each decodes about half. (A plain
    semaphore let the one that gave its slot back take it again at once.)"""
    slots, decoded, stop = DecodeSlots(1), [0, 0], threading.Event()

    def read(i):
        container, decoder, todo = packets(video)
        turn = Turn(slots, quantum_s=0.01)
        with container:
            while not stop.is_set():
                for packet in todo:
                    if stop.is_set():
                        break
                    decoded[i] += len(turn.decode(decoder, packet, behind=True))
                decoder.flush_buffers()
        turn.release()

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert min(decoded) > 0.3 * sum(decoded), decoded
    assert slots.free == 1


def test_decode_slots_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        DecodeSlots(0)
