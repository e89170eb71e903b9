"""reelflow's data plane: sources, decoding, segments, transforms, models. No Redis, no Ray.

    >>> from pipelines import ActionClassifier                            # doctest: +SKIP
    >>> ActionClassifier("x3d_xs", weights="none").classify_video("video.mp4")

Heavy modules (torch, PyAV) load on first use, so `import pipelines` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ActionClassifier", "SegmentResult"]

if TYPE_CHECKING:
    from pipelines.classifier import ActionClassifier
    from pipelines.results import SegmentResult


def __getattr__(name: str):
    if name == "ActionClassifier":
        from pipelines.classifier import ActionClassifier

        return ActionClassifier
    if name == "SegmentResult":
        from pipelines.results import SegmentResult

        return SegmentResult
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
