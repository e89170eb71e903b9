"""Index rows for the vector index tests: random vectors with the columns a stack writes."""

from __future__ import annotations

import time

import numpy as np

DIM = 64


def rows(n: int, job: str = "j1", weights: str = "w1", seed: int = 0, label: str = "abseiling") -> list[dict]:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return [{"id": f"job:{job}:{i}", "kind": "job", "job": job, "stream": "", "source": f"/videos/{job}.mp4",
             "segment": i, "start_s": 1.6 * i, "end_s": 1.6 * i + 1.6, "label": label, "score": 0.5, "at": time.time(),
             "model": "x3d_xs", "weights": weights, "vector": vectors[i]} for i in range(n)]
