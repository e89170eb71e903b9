"""Per-segment results and their compact wire form.

    >>> r = SegmentResult("clip.mp4", 0, 0.0, 1.6, "x3d_xs", "kinetics (X3D_XS.pyth)",
    ...                   ["abseiling"], [0.9], np.ones(2, np.float32), 48)
    >>> SegmentResult.from_dict(r.to_dict()).embedding.tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field

import numpy as np

from pipelines.models import is_random_weights


@dataclass
class SegmentResult:
    source: str  # job id, stream id, or the path classified in-process
    index: int
    start_s: float
    end_s: float
    model: str
    weights: str  # which weights made it; random init says so
    labels: list[str]  # top-k class names, best first
    scores: list[float]  # their softmax probabilities
    embedding: np.ndarray | None = field(repr=False)  # float32 (D,)
    frames: int = 0  # frames of the video inside the segment

    @property
    def random_weights(self) -> bool:
        return is_random_weights(self.weights)

    def to_dict(self, embedding: str | None = "base64") -> dict:
        """JSON-ready dict; the embedding as base64 float32 LE ('base64'), a list ('list') or left out (None)."""
        d = asdict(self)
        d.pop("embedding")
        d["random_weights"] = self.random_weights
        if embedding is not None and self.embedding is not None:
            vec = np.asarray(self.embedding, dtype="<f4")
            if embedding == "base64":
                d["embedding_b64"] = base64.b64encode(vec.tobytes()).decode("ascii")
            else:
                d["embedding"] = vec.tolist()
            d["embedding_dim"] = int(vec.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SegmentResult:
        d = dict(d)
        if "embedding_b64" in d:
            vec = np.frombuffer(base64.b64decode(d["embedding_b64"]), dtype="<f4")
        elif "embedding" in d:
            vec = np.asarray(d["embedding"], dtype=np.float32)
        else:
            vec = None
        names = {f for f in cls.__dataclass_fields__ if f != "embedding"}
        return cls(**{k: v for k, v in d.items() if k in names}, embedding=vec)
