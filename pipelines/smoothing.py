"""Steadier labels for live streams: a moving average of scores, and label-change events with
hysteresis (a label enters above one threshold and leaves only below a lower one, so a score
wavering around a single threshold does not flicker).

    >>> smoother, events = Smoother(k=3), LabelEvents(enter=0.6, exit=0.4)
    >>> events.update(smoother.add(np.array([0.1, 0.9])), index=0)
    [{'event': 'enter', 'label': 1, 'score': 0.9, 'index': 0}]
"""

from __future__ import annotations

from collections import deque

import numpy as np


class Smoother:
    """The mean of the last `k` score vectors."""

    def __init__(self, k: int = 3):
        if k < 1:
            raise ValueError(f"smoothing window must be at least 1 segment, got {k}")
        self._recent: deque[np.ndarray] = deque(maxlen=k)

    def add(self, scores: np.ndarray) -> np.ndarray:
        self._recent.append(np.asarray(scores, dtype=np.float32))
        return np.mean(self._recent, axis=0)


class LabelEvents:
    """Which label is current; `update` returns the events a new (smoothed) score vector causes."""

    def __init__(self, enter: float = 0.5, exit: float = 0.3):
        if not 0 <= exit <= enter <= 1:
            raise ValueError(f"need 0 <= exit <= enter <= 1, got enter={enter}, exit={exit}")
        self.enter, self.exit = enter, exit
        self.current: int | None = None

    def update(self, scores: np.ndarray, index: int) -> list[dict]:
        events = []
        if self.current is not None and scores[self.current] < self.exit:
            events.append({"event": "exit", "label": self.current, "score": round(float(scores[self.current]), 6),
                           "index": index})
            self.current = None
        top = int(np.argmax(scores))
        if top != self.current and scores[top] >= self.enter:
            if self.current is not None:
                events.append({"event": "exit", "label": self.current,
                               "score": round(float(scores[self.current]), 6), "index": index})
            events.append({"event": "enter", "label": top, "score": round(float(scores[top]), 6), "index": index})
            self.current = top
        return events
